"""Cloud Storage clients pointed at the right place: real Cloud Storage, or a local emulator.

A user sets one variable, ``STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT`` (the one Google's client
libraries read), and :func:`configure` derives what each storage layer of the project needs:

===========================  =====================================================================
layer                        how it is pointed at the emulator
===========================  =====================================================================
``etils.epath`` (run paths,  ``EPATH_USE_TF=false`` (always: gs:// goes through gcsfs, the backend
orbax's files)               that can be redirected; TensorFlow's cannot) + gcsfs reading
                             ``STORAGE_EMULATOR_HOST``, anonymous token, no zonal-bucket probe
                             (``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false``: a gRPC call an emulator
                             cannot answer, 60 s each); always without gcsfs' listing cache
tensorstore (orbax arrays)   ``TENSORSTORE_GCS_HTTP_URL``, token ``GOOGLE_AUTH_TOKEN_FOR_TESTING``
TensorFlow (tfds records,    endpoints compiled in: ``https_proxy`` to a loopback TLS bridge
``tf.summary``, gfile)       (:mod:`dog_jax.storage.tls_bridge`) + ``CURL_CA_BUNDLE``, same token
google-auth                  ``NO_GCE_CHECK=true``; metadata-server lookups go to a closed loopback
                             port (``GCE_METADATA_HOST``/``GCE_METADATA_IP``) and fail at once
===========================  =====================================================================

So with an emulator nothing asks the GCE metadata server (169.254.169.254) or any Google host.
Without the variable only ``EPATH_USE_TF=false`` is set; the clients find credentials as usual
(on a TPU VM: its service account, through the metadata server).

Call :func:`configure` at the start of every command, before any storage client exists.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import subprocess
import sys
import tempfile
import urllib.parse
from typing import MutableMapping

EMULATOR_VARIABLE = "STORAGE_EMULATOR_HOST"
_TEST_TOKEN = "dog-jax-local-emulator"  # any string: an emulator accepts every token
# A port on loopback that nothing listens on: metadata-server lookups are refused at once.
_NO_METADATA_SERVER = "127.0.0.1:9"
_CONFIGURED = "DOG_JAX_STORAGE_CONFIGURED"


class StorageConfigError(ValueError):
    """``STORAGE_EMULATOR_HOST`` is not a usable URL; the message says what to set."""


def emulator_address(value: str) -> tuple[str, int, str]:
    """``(host, port, url)`` of an emulator URL such as ``http://127.0.0.1:4443``.

    Raises:
      StorageConfigError: not ``http://HOST:PORT`` (TLS to the emulator is not supported).
    """
    url = value if "://" in value else f"http://{value}"
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "http" or not parsed.hostname or not parsed.port:
        raise StorageConfigError(f"{EMULATOR_VARIABLE}={value!r}: expected http://HOST:PORT of a local Cloud "
                                 "Storage emulator (e.g. http://127.0.0.1:4443, fake-gcs-server -scheme http).")
    return parsed.hostname, parsed.port, f"http://{parsed.hostname}:{parsed.port}"


def configure(environ: MutableMapping[str, str] | None = None) -> str | None:
    """Points every storage layer at real Cloud Storage or at the emulator that
    ``STORAGE_EMULATOR_HOST`` names (see the module docstring); returns the emulator URL or None.

    Idempotent; in a process that already has its TensorFlow bridge running for the same emulator
    it is reused. Variables a user set explicitly are kept (``setdefault``), except the proxy that
    only this function chooses.

    Raises:
      StorageConfigError: a malformed ``STORAGE_EMULATOR_HOST``.
    """
    env = os.environ if environ is None else environ
    value = env.get(EMULATOR_VARIABLE)
    address = emulator_address(value) if value else None
    done = f"{address[2] if address else 'cloud'} {os.getpid()}"  # children inherit variables, not the bridge
    if env.get(_CONFIGURED) == done:
        return address[2] if address else None
    env.setdefault("EPATH_USE_TF", "false")
    _forget_epath_backend_choice()
    # Always: gcsfs' listing cache never expires by default, and other hosts, tensorstore (orbax's
    # arrays) and TensorFlow write behind its back -- a stale listing once made the trainer skip a
    # checkpoint it believed written (tests/train/test_reliability_inputs.py, bucket case).
    gcs_defaults = _fsspec_gcs_defaults()
    gcs_defaults["use_listings_cache"] = False
    if address is not None:
        _point_at_emulator(env, *address)
        gcs_defaults["token"] = "anon"
        _use_plain_gcsfs()
    _forget_cached_clients()
    env[_CONFIGURED] = done
    return address[2] if address else None


def _point_at_emulator(env: MutableMapping[str, str], host: str, port: int, url: str) -> None:
    for name, default in (("TENSORSTORE_GCS_HTTP_URL", url), ("GOOGLE_AUTH_TOKEN_FOR_TESTING", _TEST_TOKEN),
                          ("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false"), ("NO_GCE_CHECK", "true"),
                          ("GCE_METADATA_HOST", _NO_METADATA_SERVER), ("GCE_METADATA_IP", _NO_METADATA_SERVER)):
        env.setdefault(name, default)
    bridge = _bridge_for((host, port))
    proxy = f"http://127.0.0.1:{bridge.port}"
    local = ",".join(sorted({"127.0.0.1", "localhost", "::1", host}))
    for name, setting in (("https_proxy", proxy), ("HTTPS_PROXY", proxy), ("CURL_CA_BUNDLE", bridge.ca_file),
                          ("no_proxy", local), ("NO_PROXY", local)):
        env[name] = setting
    # Emulators lack gcsfs' first choice for renames (the moveTo API: 400); gcsfs then copies and
    # deletes, which works, but logs a traceback at ERROR each time. Only that logger is hushed.
    logging.getLogger("gcsfs").setLevel(logging.CRITICAL)


def _use_plain_gcsfs() -> None:
    """gcsfs picks, when first imported, a client that asks Google's storage-control gRPC service
    for each bucket's type (unless ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` was set before that
    import); an emulator cannot answer it, and the calls retry for minutes. With an emulator the
    plain JSON-API client is registered for gs://, whenever gcsfs was imported."""
    import fsspec
    from gcsfs.core import GCSFileSystem

    for protocol in ("gs", "gcs"):
        fsspec.register_implementation(protocol, GCSFileSystem, clobber=True)


def _fsspec_gcs_defaults() -> dict:
    """fsspec's defaults for new gcsfs clients (read from ``FSSPEC_GCS_*`` only at fsspec's import,
    so set here directly)."""
    import fsspec.config

    return fsspec.config.conf.setdefault("gcs", {})


@dataclasses.dataclass(frozen=True)
class _Bridge:
    port: int
    ca_file: str
    process: subprocess.Popen


@functools.cache  # one bridge process per emulator and process; it exits when this process does
def _bridge_for(emulator: tuple[str, int]) -> _Bridge:
    from dog_jax.storage import tls_bridge

    directory = tempfile.mkdtemp(prefix="dog_jax_storage_bridge_")
    # Run as a file, not ``-m dog_jax...``: the package's __init__ would import JAX for nothing.
    process = subprocess.Popen([sys.executable, tls_bridge.__file__, emulator[0], str(emulator[1]), directory],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline().split()
    if len(line) != 2:
        raise StorageConfigError(f"the local TLS bridge for TensorFlow's Cloud Storage client did not start "
                                 f"(exit code {process.poll()}); is the 'cryptography' package installed?")
    return _Bridge(port=int(line[0]), ca_file=line[1], process=process)


def _forget_epath_backend_choice() -> None:
    """etils decides once per process, at the first path it sees (local ones too), whether gs://
    goes to TensorFlow; a path used before :func:`configure` would fix that choice. The decision is
    a cached private function of etils 1.15 (``gpath._is_tf_installed``); tests/storage/test_emulator.py
    fails if that changes."""
    from etils.epath import gpath

    decide = getattr(gpath, "_is_tf_installed", None)
    if decide is not None and hasattr(decide, "cache_clear"):
        decide.cache_clear()


def _forget_cached_clients() -> None:
    """fsspec keeps one gcsfs client per argument set, made with the endpoint of its time."""
    try:
        import gcsfs
    except ImportError:
        return
    gcsfs.GCSFileSystem.clear_instance_cache()
