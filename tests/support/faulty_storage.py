"""A Cloud Storage server that starts refusing writes on cue: a plain-HTTP relay on 127.0.0.1 in front
of the tests' fake-gcs-server, set as ``STORAGE_EMULATOR_HOST``, so every client of a run (tensorstore,
gcsfs, google-cloud-storage, TensorFlow through its TLS bridge) goes through it.

Once :meth:`RefusingRelay.refuse_writes_after` is armed, the relay passes that many more writes
(POST/PUT/PATCH/DELETE) whose URL names a given part of the bucket, then answers every write with
Cloud Storage's 403 JSON error, as a bucket does after its write permission was revoked; reads still
pass. Each request is read whole and sent on with ``http.client`` (the relay is for tests: small objects).
"""

from __future__ import annotations

import http.client
import http.server
import json
import sys
import threading
import urllib.parse

_WRITES = ("POST", "PUT", "PATCH", "DELETE")
# Hop-by-hop headers (RFC 9110): the relay frames each message itself.
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection", "expect"}


class RefusingRelay:
    """The relay: ``url`` for ``STORAGE_EMULATOR_HOST``; ``upstream`` is the real server's ``(host, port)``
    (set after start: the server is started with this relay's ``url`` as its external URL)."""

    def __init__(self):
        self.upstream: tuple[str, int] | None = None
        self.refused: list[str] = []  # "METHOD decoded-target" of every write answered 403
        self.passed_marked: list[str] = []  # writes passed whose target held the marker, once armed
        self._lock = threading.Lock()
        self._marker: str | None = None
        self._allowance = 0
        self._server = _Server(("127.0.0.1", 0), _handler(self))
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._server.serve_forever, name="refusing-relay", daemon=True).start()

    def refuse_writes_after(self, marker: str, allowance: int) -> None:
        """After ``allowance`` more writes whose decoded URL contains ``marker``, refuse every write."""
        with self._lock:
            self._marker, self._allowance = marker, allowance
            self.refused, self.passed_marked = [], []

    def allow_writes(self) -> None:
        with self._lock:
            self._marker = None

    def refuses(self, method: str, target: str) -> bool:
        text = f"{method} {urllib.parse.unquote(target)}"
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

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A client that hung up (e.g. a train.py run ended at once by a storage failure) is no error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler(relay: RefusingRelay) -> type[http.server.BaseHTTPRequestHandler]:
    class Relay(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the storage clients expect
        # A response goes out as two writes (head, then body): with Nagle's algorithm the body waited for
        # the client's delayed ACK of the head, up to 40 ms per request on Linux.
        disable_nagle_algorithm = True

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length", 0)))

        def _relay(self) -> None:
            body = self._body()
            if relay.refuses(self.command, self.path):
                self._send(403, [("Content-Type", "application/json")], _FORBIDDEN)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            upstream = http.client.HTTPConnection(*relay.upstream, timeout=60)
            try:
                upstream.request(self.command, self.path, body=body if body or self.command in _WRITES else None,
                                 headers=headers)
                response = upstream.getresponse()
                content = response.read()
                self._send(response.status, [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP
                                             and k.lower() != "content-length"], content)
            finally:
                upstream.close()

        def _send(self, status: int, headers: list[tuple[str, str]], content: bytes) -> None:
            self.send_response_only(status)
            for key, value in headers:
                self.send_header(key, value)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(content)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _relay

        def log_message(self, *args) -> None:
            pass

    return Relay


_FORBIDDEN = json.dumps({"error": {
    "code": 403, "errors": [{"reason": "forbidden", "domain": "global"}],
    "message": "dog-jax-test@example.iam.gserviceaccount.com does not have storage.objects.create access to the "
               "Google Cloud Storage object. Permission 'storage.objects.create' denied on resource (or it may not "
               "exist)."}}).encode()
