"""A Cloud Storage server that starts refusing writes on cue: a plain-HTTP relay on 127.0.0.1 in front
of the tests' fake-gcs-server, set as ``STORAGE_EMULATOR_HOST``, so every client of a run (tensorstore,
gcsfs, google-cloud-storage, TensorFlow through its TLS bridge) goes through it.

Once :meth:`RefusingRelay.refuse_writes_after` is armed, the relay passes that many more writes
(POST/PUT/PATCH/DELETE) whose URL names a given part of the bucket, then answers every write with
Cloud Storage's 403 JSON error, as a bucket does after its write permission was revoked; reads still
pass. It relays request by request with the message framing of :mod:`dog_jax.storage.tls_bridge`.
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.parse

from dog_jax.storage.tls_bridge import _Closed, _header, _headers, _join, _Reader, _relay_body

_WRITES = (b"POST", b"PUT", b"PATCH", b"DELETE")


class RefusingRelay:
    """The relay: ``url`` for ``STORAGE_EMULATOR_HOST``; ``upstream`` is the real server's ``(host, port)``
    (settable after start: the server is started with this relay's ``url`` as its external URL)."""

    def __init__(self):
        self.upstream: tuple[str, int] | None = None
        self.refused: list[str] = []  # "METHOD decoded-target" of every write answered 403
        self.passed_marked: list[str] = []  # writes passed whose target held the marker, once armed
        self._lock = threading.Lock()
        self._marker: str | None = None
        self._allowance = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, name="refusing-relay", daemon=True).start()

    def refuse_writes_after(self, marker: str, allowance: int) -> None:
        """After ``allowance`` more writes whose decoded URL contains ``marker``, refuse every write."""
        with self._lock:
            self._marker, self._allowance = marker, allowance
            self.refused, self.passed_marked = [], []

    def allow_writes(self) -> None:
        with self._lock:
            self._marker = None

    def _refuses(self, method: bytes, target: bytes) -> bool:
        text = f"{method.decode()} {urllib.parse.unquote(target.decode(errors='replace'))}"
        with self._lock:
            if self._marker is None or method not in _WRITES:
                return False
            if self._allowance > 0:
                if self._marker in text:
                    self._allowance -= 1
                    self.passed_marked.append(text)
                return False
            self.refused.append(text)
            return True

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        client, upstream = _Reader(connection), None
        try:
            while True:
                first, headers = _headers(client.head())
                method, target = first.split(b" ")[:2]
                if (_header(headers, b"expect") or b"").lower() == b"100-continue":
                    connection.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                headers = [(k, v) for k, v in headers if k.lower() != b"expect"]
                if self._refuses(method.upper(), target):
                    _relay_body(client, headers, _Discard(), until_close=False)
                    connection.sendall(_forbidden())
                    continue
                if upstream is None:
                    upstream = _Reader(socket.create_connection(self.upstream))
                upstream.sock.sendall(_join(first, headers))
                _relay_body(client, headers, upstream.sock, until_close=False)
                while True:  # interim (1xx) responses are not passed on
                    status_line, response = _headers(upstream.head())
                    if int(status_line.split(b" ")[1]) >= 200:
                        break
                connection.sendall(_join(status_line, response))
                status = int(status_line.split(b" ")[1])
                if method.upper() != b"HEAD" and status not in (204, 304):
                    if not _relay_body(upstream, response, connection, until_close=True):
                        return
                if (_header(response, b"connection") or b"").lower() == b"close":
                    return
        except (_Closed, OSError, ValueError, IndexError):
            pass
        finally:
            connection.close()
            if upstream is not None:
                upstream.sock.close()

    def close(self) -> None:
        self._server.close()


class _Discard:
    def sendall(self, data: bytes) -> None:
        del data


def _forbidden() -> bytes:
    body = json.dumps({"error": {"code": 403, "message": "dog-jax-test@example.iam.gserviceaccount.com does not "
                                 "have storage.objects.create access to the Google Cloud Storage object. "
                                 "Permission 'storage.objects.create' denied on resource (or it may not exist).",
                                 "errors": [{"reason": "forbidden", "domain": "global"}]}}).encode()
    head = [(b"Content-Type", b"application/json"), (b"Content-Length", str(len(body)).encode())]
    return _join(b"HTTP/1.1 403 Forbidden", head) + body
