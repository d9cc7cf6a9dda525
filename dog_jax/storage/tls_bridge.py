"""A loopback HTTPS proxy that hands TensorFlow's Cloud Storage requests to a local GCS server.

TensorFlow's own GCS filesystem (``tf.io.gfile``, ``tf.data`` TFRecord reads, ``tf.summary`` on
``gs://``; tsl ``gcs_file_system.cc``) has its endpoints compiled in -- ``www.googleapis.com`` and
``storage.googleapis.com``, no variable changes them -- so it cannot be pointed at a local server
the way the Python clients can (``STORAGE_EMULATOR_HOST``). Its libcurl does honour ``https_proxy``
and ``CURL_CA_BUNDLE``. This bridge is that proxy: it accepts ``CONNECT`` for the two storage hosts
only (any other host gets 403, so nothing goes further than 127.0.0.1), terminates TLS with a
certificate made for this process and signed by a one-off CA that ``CURL_CA_BUNDLE`` names, and
relays the plain HTTP to the emulator, request by request, with two repairs:

* TensorFlow sends ``Transfer-Encoding: identity`` on uploads, which HTTP/1.1 servers such as
  fake-gcs-server refuse (501); the header is dropped (identity means "no encoding").
* The emulator answers an upload's initiation with a ``Location: http://www.googleapis.com/...``
  built from the request's Host; it is rewritten to ``https://`` so the upload comes back here.

It is only ever started for a local emulator (``dog_jax.storage.emulator``); against real Cloud
Storage TensorFlow talks to Google directly.
"""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import sys
import threading

STORAGE_HOSTS = ("www.googleapis.com", "storage.googleapis.com")
_HEAD_END = b"\r\n\r\n"
_MAX_HEAD = 1 << 20


class _Closed(Exception):
    """The peer closed the connection between or inside messages."""


def write_certificates(directory: str) -> tuple[str, str, str]:
    """A one-off CA and a server certificate for :data:`STORAGE_HOSTS` signed by it, as PEM files in
    ``directory``; returns ``(ca_file, cert_file, key_file)``. Valid for 30 days."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=30)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dog_jax local storage emulator CA")])
    usage = dict(content_commitment=False, key_encipherment=False, data_encipherment=False, key_agreement=False,
                 encipher_only=False, decipher_only=False)
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, **usage),
                         critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, STORAGE_HOSTS[0])]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in STORAGE_HOSTS]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = tuple(os.path.join(directory, name) for name in ("ca.pem", "cert.pem", "key.pem"))
    pem = serialization.Encoding.PEM
    contents = (ca.public_bytes(pem), leaf.public_bytes(pem),
                key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    for path, content in zip(files, contents):
        with open(path, "wb") as f:  # local: the bridge's own key material, never a run path
            f.write(content)
    return files  # type: ignore[return-value]


class _Reader:
    """Buffered reads of one socket: heads up to the blank line, exact byte counts, lines."""

    def __init__(self, sock: socket.socket):
        self.sock, self.buffer = sock, b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise _Closed()
        self.buffer += chunk

    def head(self) -> bytes:
        while _HEAD_END not in self.buffer:
            if len(self.buffer) > _MAX_HEAD:
                raise _Closed()
            self._fill()
        head, self.buffer = self.buffer.split(_HEAD_END, 1)
        return head

    def exactly(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self._fill()
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            self._fill()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line + b"\r\n"

    def rest(self):
        if self.buffer:
            yield self.buffer
            self.buffer = b""
        while chunk := self.sock.recv(65536):
            yield chunk


def _headers(head: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    first, *lines = head.split(b"\r\n")
    return first, [(name.strip(), value.strip()) for name, _, value in (line.partition(b":") for line in lines)]


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    return next((value for key, value in headers if key.lower() == name), None)


def _join(first: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    return b"\r\n".join([first, *(key + b": " + value for key, value in headers)]) + _HEAD_END


def _relay_body(reader: _Reader, headers: list[tuple[bytes, bytes]], out: socket.socket, *, until_close: bool) -> bool:
    """Copies one message body; returns False when the body ends with the connection."""
    length = _header(headers, b"content-length")
    if (_header(headers, b"transfer-encoding") or b"").lower() == b"chunked":
        while True:
            size_line = reader.line()
            out.sendall(size_line)
            size = int(size_line.split(b";")[0], 16)
            out.sendall(reader.exactly(size + 2))
            if size == 0:
                return True
    if length is not None:
        out.sendall(reader.exactly(int(length)))
        return True
    if until_close:
        for chunk in reader.rest():
            out.sendall(chunk)
        return False
    return True


def _exchange(client: _Reader, upstream: _Reader) -> bool:
    """Relays one request and its response; False when the connection is to be closed."""
    first, headers = _headers(client.head())
    method = first.split(b" ", 1)[0].upper()
    if (_header(headers, b"expect") or b"").lower() == b"100-continue":
        client.sock.sendall(b"HTTP/1.1 100 Continue" + _HEAD_END)  # the body is read here, not upstream
    headers = [(k, v) for k, v in headers if k.lower() != b"expect"
               and not (k.lower() == b"transfer-encoding" and v.lower() == b"identity")]
    upstream.sock.sendall(_join(first, headers))
    _relay_body(client, headers, upstream.sock, until_close=False)
    while True:  # skip interim (1xx) responses
        status_line, response = _headers(upstream.head())
        status = int(status_line.split(b" ")[1])
        if status >= 200:
            break
    response = [(k, v.replace(b"http://", b"https://", 1) if k.lower() == b"location"
                 and any(v.startswith(b"http://" + h.encode()) for h in STORAGE_HOSTS) else v)
                for k, v in response]
    client.sock.sendall(_join(status_line, response))
    if method == b"HEAD" or status in (204, 304):
        return True
    keep = _relay_body(upstream, response, client.sock, until_close=True)
    return keep and (_header(response, b"connection") or b"").lower() != b"close"


def _no_delay(sock: socket.socket) -> socket.socket:
    """``sock`` with Nagle's algorithm off: a message goes out as several writes (head, then body), and
    with Nagle each later write waited for the peer's delayed ACK of the first, up to 40 ms per message."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class TlsBridge:
    """The proxy: ``https_proxy=http://127.0.0.1:{port}``, ``CURL_CA_BUNDLE={ca_file}``.

    Args:
      emulator: ``(host, port)`` of the plain-HTTP storage server to relay to.
      directory: where the certificate files are written (kept for the process' lifetime).
    """

    def __init__(self, emulator: tuple[str, int], directory: str):
        self.emulator = emulator
        self.ca_file, cert_file, key_file = write_certificates(directory)
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert_file, key_file)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, name="dog_jax-storage-bridge", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return  # closed
            _no_delay(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        upstream = None
        try:
            first, _ = _headers(_Reader(connection).head())
            parts = first.split(b" ")
            host = parts[1].rsplit(b":", 1)[0].decode() if len(parts) > 1 else ""
            if parts[0] != b"CONNECT" or host not in STORAGE_HOSTS:
                connection.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0" + _HEAD_END)
                return
            connection.sendall(b"HTTP/1.1 200 Connection established" + _HEAD_END)
            client = _Reader(self._context.wrap_socket(connection, server_side=True))
            upstream = _Reader(_no_delay(socket.create_connection(self.emulator)))
            while _exchange(client, upstream):
                pass
        except (_Closed, OSError, ValueError, IndexError):
            pass  # the client or the emulator went away, or spoke something that is not HTTP/1.1
        finally:
            for sock in (connection, upstream.sock if upstream else None):
                if sock is not None:
                    sock.close()

    def close(self) -> None:
        self._server.close()


def main(argv: list[str]) -> None:
    """``python tls_bridge.py HOST PORT DIRECTORY``: serves until its standard input closes (its
    parent process ended), after printing ``<proxy port> <CA file>`` as one line.

    The bridge runs in a process of its own, not a thread of the process it serves: some
    TensorFlow file operations (e.g. ``tf.io.TFRecordWriter``) hold the GIL while their libcurl
    waits for the proxy, which a Python thread of the same process could then never answer.
    """
    host, port, directory = argv
    bridge = TlsBridge((host, int(port)), directory)
    print(bridge.port, bridge.ca_file, flush=True)
    sys.stdin.read()  # returns at EOF: the parent is gone


if __name__ == "__main__":
    main(sys.argv[1:])
