"""Shared test setup.

Every pytest(-xdist) worker collects every test module, so PyTorch/timm (model parity tests) and
TensorFlow (input pipeline tests) end up in one process. With the pinned versions, importing
torchvision *after* tensorflow segfaults (tensorflow-cpu 2.21 + torchvision 0.29.1, measured
here); the other order works. So torchvision, when installed, is imported first.

Tests write only under temporary directories: the defaults that libraries fall back to when a
test passes no directory (tfds' ~/tensorflow_datasets, matplotlib's and Keras' caches under ~)
point into one scratch directory per pytest run, made by the first process that loads this file
(pytest-xdist's controller), inherited by its workers and by the subprocesses tests start, and
removed when that process exits; hypothesis' storage (./.hypothesis by default: its constants cache)
goes there too, and it keeps no example database.

The scratch directory also holds a JAX persistent compilation cache: the trainer tests compile
the same small train and eval steps in many runs and processes (reference, interrupted and resumed
runs, train.py subprocesses); each is compiled once per pytest run. Tracing still happens in every
run (the trace-count and signal-during-trace tests see it); only XLA's compilation is reused
(tests/project/test_compilation_cache.py: a loaded step computes what a fresh compile does). Every
compile is kept, however short: JAX keeps only those over 1 s by default, and under the suite's
compile flags most steps compile faster than that, so without it the cache held almost nothing
(a tiny ConvMixer run in-process, second time: 4.4 s -> 3.7 s, 2026-12-07).

The suite's time budget is 8 minutes on 2 cores, and a trainer run costs seconds of CPU in the
test process and ~10 s more in a new process (importing TensorFlow, JAX, Flax, orbax). A new test
that trains:
  * trains on ``tiny_data_dir`` (the tiny demo dataset, prepared once per pytest run for all
    workers) with ``tests.support.configs.tiny_config`` (or ``tests.support.workdirs.tiny_family_config``
    for another family), as few steps as its point needs;
  * gets the compilation cache for free, in this process and in any subprocess that inherits
    ``os.environ`` (pass ``env=dict(os.environ, ...)``, never a fresh environment);
  * compares with the ``short_reference`` fixture (the uninterrupted ``SHORT_RUN`` of
    ``tiny_config``) when it needs an uninterrupted run of a short config, or with
    ``tests.support.shared.reference_run(config)`` for a config of its own: one run per pytest run,
    shared by every test and worker (never written to);
  * runs in this process (``train_and_evaluate``, or ``tests.support.train_cli`` for train.py's
    command line) unless a separate process is its point (signals, exit codes, device counts,
    several processes), and makes one run serve all its assertions;
  * is marked ``slow`` if it takes more than a few seconds, so that it starts early.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow imports Keras 3 when it is imported (and Keras imports scikit-learn and matplotlib),
# unless TF_USE_LEGACY_KERAS asks for the tf_keras package instead, which is not installed: then no
# Keras at all. Nothing in dog_jax or its tests uses tf.keras; every process the tests start saves
# ~20 % of its import time. train.py sets it for itself (tests/project/test_train_script.py);
# tests/analysis/test_trained_checkpoint.py runs its analysis commands without it, as users do.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

if "DOG_JAX_TEST_SCRATCH" not in os.environ:
    os.environ["DOG_JAX_TEST_SCRATCH"] = tempfile.mkdtemp(prefix="dog_jax_tests_")
    atexit.register(shutil.rmtree, os.environ["DOG_JAX_TEST_SCRATCH"], ignore_errors=True)
for _name, _sub in (("TFDS_DATA_DIR", "tensorflow_datasets"), ("MPLCONFIGDIR", "matplotlib"),
                    ("KERAS_HOME", "keras"), ("JAX_COMPILATION_CACHE_DIR", "jax_cache"),
                    ("HYPOTHESIS_STORAGE_DIRECTORY", "hypothesis")):
    os.environ[_name] = os.path.join(os.environ["DOG_JAX_TEST_SCRATCH"], _sub)
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"

try:
    import torchvision  # noqa: F401
except ImportError:  # torch is a test-only dependency; tests that need it say so (tests/support/requires.py)
    pass

# Before JAX is imported anywhere: the suite's XLA:CPU compile flags (tests/support/subprocesses.py).
from tests.support.subprocesses import FAST_COMPILE_XLA_FLAGS  # noqa: E402

os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE_XLA_FLAGS}".strip()

# libtpu (installed for the TPU compile tests) makes every JAX start probe for TPU chips and take a
# per-host lock file; the tests run on CPU and reach TPU devices only through topology descriptions.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import hypothesis  # noqa: E402
import pytest  # noqa: E402

# The optional-dependency rule: the `requires` marker, and under CI=true a skipped test fails the run.
from tests.support.requires import (  # noqa: E402, F401
    FAKE_GCS,
    pytest_runtest_setup,
    pytest_sessionfinish,
    pytest_terminal_summary,
    require,
)
from tests.support.requires import pytest_configure as _requires_configure  # noqa: E402

# A worker that dies of a fatal signal: its signal and stacks in the run's summary (tests/support/fatal_errors.py).
pytest_plugins = ["tests.support.fatal_errors"]

hypothesis.settings.register_profile("dog_jax", database=None)
hypothesis.settings.load_profile("dog_jax")


def pytest_configure(config):
    """The ``requires`` marker (tests/support/requires.py), and pytest-xdist's load scheduling one test
    at a time: by default (``--dist load``, pytest-xdist 3.8) each worker first receives a block of
    *consecutive* tests (an eighth of the suite for two workers), so the long tests, which come first
    (:func:`pytest_collection_modifyitems`), would all land on one worker while the other ran only
    short ones. With ``--maxschedchunk=1`` (unless given on the command line) every worker takes the
    next test from the front of the list whenever it runs short: the long tests spread over all
    workers and the short ones fill the gaps."""
    _requires_configure(config)
    if getattr(config.option, "dist", "no") == "load" and getattr(config.option, "maxschedchunk", 0) is None:
        config.option.maxschedchunk = 1


@pytest.fixture(autouse=True)
def _restore_logging():
    """CLIs called in-process (``main([...])``) set up the console (dog_jax.console): the test
    process's logging, absl's flag state and import hooks are put back after every test."""
    import logging
    import sys

    from absl import flags
    from absl import logging as absl_logging

    root, handler = logging.getLogger(), absl_logging.get_absl_handler()
    saved = root.level, root.handlers[:], handler.filters[:], sys.meta_path[:], flags.FLAGS.is_parsed()
    yield
    root.setLevel(saved[0])
    root.handlers[:], handler.filters[:], sys.meta_path[:] = saved[1], saved[2], saved[3]
    if flags.FLAGS.is_parsed() and not saved[4]:
        flags.FLAGS.unparse_flags()


@pytest.fixture
def one_trace_per_run(monkeypatch):
    """The trainer's train and eval steps are traced (so compiled) at most once per step function
    (i.e. per ``train_and_evaluate`` call), whatever evaluations, checkpoints and resumes happen:
    each is wrapped in ``chex.assert_max_traces(n=1)`` before ``jax.jit`` sees it, and a second
    trace raises. Yields the names of the step functions wrapped so far (the test checks that the
    hook saw the ones it expects)."""
    import chex
    import jax

    wrapped = []
    jit = jax.jit

    def counting_jit(fun, *args, **kwargs):
        if getattr(fun, "__module__", None) == "dog_jax.train.steps" and fun.__name__ in ("train_step", "eval_step"):
            wrapped.append(fun.__name__)
            # chex counts per definition site, not per closure: a new run (new step functions) starts
            # from zero. Both steps are built before either is first called, so neither loses a count.
            chex.clear_trace_counter()
            fun = chex.assert_max_traces(fun, n=1)
        return jit(fun, *args, **kwargs)

    monkeypatch.setattr(jax, "jit", counting_jit)
    yield wrapped


@pytest.fixture(scope="session")
def tiny_data_dir():
    """The tiny demo dataset (``dog_jax_demo/tiny``, what ``tests.support.configs.tiny_config`` trains on),
    prepared once per pytest run and shared by every worker (tests/support/shared.py): read-only."""
    from tests.support.shared import tiny_demo_data_dir

    return tiny_demo_data_dir()


@pytest.fixture(scope="session")
def short_reference(tiny_data_dir):
    """``(workdir, summary)`` of the uninterrupted run of ``tiny_config(tiny_data_dir, **SHORT_RUN)``
    (tests/support/configs.py), trained once per pytest run in the test process: what interrupted,
    resumed and concurrent runs of that config are compared with. Read-only."""
    from tests.support.configs import SHORT_RUN, tiny_config
    from tests.support.shared import reference_run

    return reference_run(tiny_config(tiny_data_dir, **SHORT_RUN))


@pytest.fixture(scope="session")
def four_shard_reference(tiny_data_dir):
    """``(workdir, summary)`` of the uninterrupted run of ``tiny_config(tiny_data_dir, **FOUR_SHARD_RUN)``
    on the test process's one device, trained once per pytest run: the losses that multi-process and
    elastic runs of that config must reproduce (same batches; float rounding of other device counts)."""
    from tests.support.configs import FOUR_SHARD_RUN, tiny_config
    from tests.support.shared import reference_run

    return reference_run(tiny_config(tiny_data_dir, **FOUR_SHARD_RUN))


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` (tens of seconds each: trainer subprocesses, resumes, TPU compiles) come first.

    pytest-xdist hands tests to its workers in this order, one at a time (:func:`pytest_configure`):
    started first, the long tests run side by side on all workers and the short ones fill the gaps;
    left at the end of the list (where tests/train/ sorts), one of them would keep a worker busy for
    a minute or more while the others had nothing left to do.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: otherwise file order


@pytest.fixture(scope="session")
def fault_reference(tiny_data_dir):
    """(config file, workdir) of the storage-fault tests' uninterrupted ``train.py`` run
    (tests/support/fault_runs.py), trained once per pytest run and shared by every worker
    (tests/support/shared.py): every fault and preemption test resumes its interrupted runs with that
    config to a final checkpoint bitwise equal to this run's. Read-only."""
    from tests.support import fault_runs
    from tests.support.shared import once

    return once("fault_reference", lambda directory: fault_runs.reference_run(directory, tiny_data_dir))[1]


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory):
    """A real Cloud Storage server (fake-gcs-server) on 127.0.0.1, one per pytest process."""
    from tests.support import gcs_server as server_lib

    require(server_lib.server_binary() is not None, "the Cloud Storage tests need fake-gcs-server", FAKE_GCS)
    server = server_lib.GcsServer(str(tmp_path_factory.mktemp("gcs_server")))
    yield server
    server.stop()


@pytest.fixture
def bucket(gcs_server):
    """``gs://<fresh empty bucket>`` on the local server. This process and every subprocess it starts
    reach it through ``STORAGE_EMULATOR_HOST`` (as a user would); the environment is put back after."""
    from tests.support.gcs_server import emulator_environment

    with emulator_environment(gcs_server.url):
        yield f"gs://{gcs_server.new_bucket()}"
