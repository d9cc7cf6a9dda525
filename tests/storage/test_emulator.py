"""``dog_jax.storage.configure``: one variable (``STORAGE_EMULATOR_HOST``) points every storage client
at a local server, and nothing is left that would reach for a Google host or the metadata server."""

import os
import socket
import subprocess
import sys
import textwrap

import pytest

from dog_jax import storage
from dog_jax.storage import emulator
from tests.support import subprocesses
from tests.support.configs import ROOT


def test_without_an_emulator_only_the_epath_backend_is_chosen():
    env = {}
    assert storage.configure(env) is None
    assert env == {"EPATH_USE_TF": "false", "DOG_JAX_STORAGE_CONFIGURED": f"cloud {os.getpid()}"}


def test_every_client_is_pointed_at_the_emulator_and_away_from_the_metadata_server(gcs_server):
    env = {storage.EMULATOR_VARIABLE: gcs_server.url, "TENSORSTORE_GCS_HTTP_URL": "http://kept-if-set"}
    assert storage.configure(env) == gcs_server.url
    assert env["TENSORSTORE_GCS_HTTP_URL"] == "http://kept-if-set"  # what a user set explicitly stays
    assert env["GCE_METADATA_HOST"].startswith("127.0.0.1:") and env["GCE_METADATA_IP"].startswith("127.0.0.1:")
    assert env["NO_GCE_CHECK"] == "true" and env["GOOGLE_AUTH_TOKEN_FOR_TESTING"]
    assert env["https_proxy"] == env["HTTPS_PROXY"] and env["https_proxy"].startswith("http://127.0.0.1:")
    assert os.path.isfile(env["CURL_CA_BUNDLE"]) and "127.0.0.1" in env["no_proxy"].split(",")
    again = dict(env)
    storage.configure(again)  # idempotent in one process: the same bridge
    assert again["https_proxy"] == env["https_proxy"]


def test_the_epath_backend_choice_made_before_configure_is_undone(monkeypatch):
    from etils import epath
    from etils.epath import gpath

    monkeypatch.delenv("EPATH_USE_TF", raising=False)
    monkeypatch.delenv("DOG_JAX_STORAGE_CONFIGURED", raising=False)
    emulator._forget_epath_backend_choice()
    epath.Path("/tmp").exists()  # etils decides (and caches) "TensorFlow for gs://" at any first path
    # (Not asked through a gs:// path: with TensorFlow etils would first ask Google whether the bucket
    # is zonal, which is exactly the lookup an offline machine must not make.)
    assert gpath._is_tf_installed()
    storage.configure()
    # Fails if etils renames the cached decision this relies on (dog_jax/storage/emulator.py).
    assert not gpath._is_tf_installed()


@pytest.mark.parametrize("value", ["https://127.0.0.1:4443", "127.0.0.1", "http://:80", "gs://bucket"])
def test_a_malformed_emulator_address_is_one_line(value):
    with pytest.raises(storage.StorageConfigError) as error:
        storage.configure({storage.EMULATOR_VARIABLE: value})
    assert "\n" not in str(error.value) and "http://HOST:PORT" in str(error.value)


def _proxy_connect(port: int, host: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode())
        return s.recv(200)


def test_the_bridge_serves_the_storage_hosts_only(gcs_server):
    env = {storage.EMULATOR_VARIABLE: gcs_server.url}
    storage.configure(env)
    port = int(env["https_proxy"].rsplit(":", 1)[1])
    assert _proxy_connect(port, "storage.googleapis.com").startswith(b"HTTP/1.1 200")
    for elsewhere in ("oauth2.googleapis.com", "metadata.google.internal", "pypi.org"):
        assert _proxy_connect(port, elsewhere).startswith(b"HTTP/1.1 403"), elsewhere


def test_tensorflow_reads_and_writes_the_emulator_through_the_bridge(bucket, gcs_server):
    """TensorFlow's GCS client (tfds records, tf.summary) has its endpoints compiled in; through
    the bridge it writes, lists and reads objects of the local server -- including an upload large
    enough for several requests, and a TFRecord file read by tf.data. Run in a fresh process:
    TensorFlow reads its proxy settings once."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {ROOT!r})
        from dog_jax import storage
        storage.configure()
        import tensorflow as tf
        with tf.io.gfile.GFile("{bucket}/tf/hello.txt", "w") as f:
            f.write("hello")
        with tf.io.TFRecordWriter("{bucket}/tf/records") as w:
            for i in range(3):
                w.write(bytes([i]) * 300_000)
        print(tf.io.gfile.GFile("{bucket}/tf/hello.txt").read(), sorted(tf.io.gfile.listdir("{bucket}/tf")),
              [len(r) for r in tf.data.TFRecordDataset("{bucket}/tf/records").as_numpy_iterator()])
    """)
    env = dict(os.environ, GCS_RETRY_CONFIG_MAX_RETRIES="1", TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
    result = subprocesses.run([sys.executable, "-c", script], env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "hello ['hello.txt', 'records'] [300000, 300000, 300000]"
    assert set(gcs_server.objects(bucket.removeprefix("gs://"), "tf/")) == {"tf/hello.txt", "tf/records"}


def test_the_bridge_process_ends_with_its_parent(gcs_server):
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {ROOT!r})
        from dog_jax.storage import emulator
        env = {{"STORAGE_EMULATOR_HOST": {gcs_server.url!r}}}
        emulator.configure(env)
        print(emulator._bridge_for(("127.0.0.1", {gcs_server.port})).process.pid, flush=True)
    """)
    result = subprocesses.run([sys.executable, "-c", script], timeout=120)
    pid = int(result.stdout.split()[-1])
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        subprocess.run(["sleep", "0.1"])
    pytest.fail(f"the bridge process {pid} outlived its parent")
