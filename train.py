"""Train a model: ``python train.py --config=configs/convmixer.py:demo --workdir=/tmp/demo``.

Intentionally thin: all logic lives in :mod:`dog_jax.train` so it can be imported and tested.
Override any config field on the command line, e.g. ``--config.batch_size=256``.
Rerunning the same command with the same ``--workdir`` resumes from the latest checkpoint.
Exit codes: 0 finished; 1 error (one ``error: ...`` line); 73 the workdir is in use by another run
(one ``error: ...`` line naming it; ``--takeover_lease`` once it is known to be dead), or its lease was
taken over while this run ran (it stops without writing more); 74 a write to the run's storage failed
(one line naming the last complete checkpoint, the command that resumes and a log file with the
detail); 75 stopped by SIGTERM after
checkpointing the last completed step, or before the first step with nothing to save
(rerun to resume; see docs/reliability.md).
Multi-process (Cloud TPU pod slices, multi-node GPU): run the same command on every host
with ``--multiprocess`` (calls ``jax.distributed.initialize()``).
``--aot_topology=v5e-16 [--aot_report=FILE.json]`` compiles the run's steps for a Cloud TPU slice
on any machine (libtpu installed, no TPU needed) and reports memory, FLOPs and collectives without
training (docs/tpu.md); exit code 1 with one line when the batch does not fit.
"""

import atexit
import importlib.util
import os
import shlex
import sys


class _ExitWithoutFinalization:
    """Ends the process as soon as every atexit handler has run, skipping Python's finalisation.

    Finalising the interpreter after a run -- collecting TensorFlow's and XLA's modules and tearing
    down their runtimes -- takes ~2 s on a 2-core CPU (docs/performance.md), after the run has
    written everything and closed its files: seconds per run of a sweep, and of every test that
    starts train.py. Only an exit through ``SystemExit`` (absl's ``app.run`` ends so, with the run's
    exit code) is shortened; an uncaught exception or Ctrl-C finalises as usual.
    """

    def __init__(self) -> None:
        self.code: int | None = None
        atexit.register(self._exit)  # registered before any import: runs after every other handler

    def record(self, stop: SystemExit) -> None:
        self.code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)

    def _exit(self) -> None:
        if self.code is not None:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(self.code)


_EXIT = _ExitWithoutFinalization()

# TensorFlow (here only for tf.data) imports Keras 3 -- and through it scikit-learn and SciPy -- when it
# is imported: ~1 s of every run's start on a 2-core CPU (docs/performance.md), for nothing a run uses.
# TensorFlow skips that when asked for the legacy tf_keras and that is not installed.
if "TF_USE_LEGACY_KERAS" not in os.environ and importlib.util.find_spec("tf_keras") is None:
    os.environ["TF_USE_LEGACY_KERAS"] = "1"

from absl import app, flags  # noqa: E402 - after the exit handler and the Keras setting
from ml_collections import config_flags  # noqa: E402

from dog_jax import console  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, optionally with ':arguments'.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, TensorBoard logs, summary.json.")
_MULTIPROCESS = flags.DEFINE_bool("multiprocess", None,
                                  "Call jax.distributed.initialize() "
                                  "(default: only if JAX_COORDINATOR_ADDRESS is set).")
_AOT_TOPOLOGY = flags.DEFINE_string(
    "aot_topology", None,
    "Compile the config's train and eval steps for this Cloud TPU slice without TPUs (e.g. v5e-16, v4-8, "
    "v6e-8, or libtpu's v5e:4x4), print memory / FLOPs / collectives and exit without training "
    "(needs libtpu: pip install -e .[tpu]; --workdir is not needed).")
_AOT_REPORT = flags.DEFINE_string("aot_report", None, "With --aot_topology: also write the report as JSON here.")
_TAKEOVER_LEASE = flags.DEFINE_bool(
    "takeover_lease", False,
    "Take the workdir's lease (LEASE.json) even if its holder looks alive: only once that run is known to be "
    "dead (e.g. its host is gone); a lease whose process is gone on this host is taken over without it.")
_VERBOSE = flags.DEFINE_bool("verbose", False, f"Console: {console.VERBOSE_HELP}.")
flags.mark_flag_as_required("config")


def _config_error(error: BaseException) -> BaseException | None:
    """The project's ConfigError behind a flag-parsing error, if any.

    ml_collections re-raises errors from ``get_config`` with a formatted traceback as message and
    absl wraps that again; the original error is further down the exception context chain.
    """
    found = None
    while error is not None:
        if type(error).__name__ == "ConfigError":
            found = error
        error = error.__cause__ or error.__context__
    return found


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with config errors reported as one line instead of a traceback."""
    # Loading the config file imports TensorFlow, so its console set-up cannot wait for the parsed flag.
    console.quiet_native(console.verbose_in(argv))
    for arg in argv[1:]:
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1].split(":", 1)[0]
            if not os.path.isfile(path):  # local: a config file (Python source)
                sys.exit(f"error: config file {path!r} not found; pass e.g. --config=configs/convmixer.py:demo")
    try:
        return flags.FLAGS(argv)
    except AttributeError as error:  # an override of a field the config does not have
        detail = " ".join(str(error).strip("'").replace("\\n", " ").replace("\\'", "'").split())
        sys.exit(f"error: unknown config field {detail}")
    except flags.Error as error:
        config_error = _config_error(error)
        if config_error is not None:
            sys.exit(f"error: {config_error}")
        detail = " ".join(str(error).split())  # e.g. a wrong type: "flag --config.batch_size=x: invalid literal..."
        sys.exit(f"error: {detail} (see --helpshort for the flags)")


def _aot(config) -> None:
    """--aot_topology: compile for a TPU slice on this machine (never opening a local accelerator)."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from dog_jax.data import DatasetError
    from dog_jax.train import ConfigError, aot
    from dog_jax.train.tpu_topology import TopologyError

    console.setup(_VERBOSE.value)
    try:
        too_big = aot.run(config, _AOT_TOPOLOGY.value, _AOT_REPORT.value)
    except (ConfigError, DatasetError, TopologyError) as error:
        raise SystemExit(f"error: {error}") from None
    if too_big:
        raise SystemExit(f"error: {too_big}")


def _stop_now(error, code: int, cause: BaseException | None = None) -> None:
    """One line -- what failed, the last complete checkpoint, the command that resumes, where the
    detail went -- then the end of the process with ``code``, at once: background writes may still
    be retrying (for minutes) and would print their tracebacks at exit (docs/reliability.md)."""
    from dog_jax.train.failure_report import write_detail_log

    command = shlex.join(["python", *sys.argv])
    line = f"error: {error.what}. {error.advice}: {command}" if error.advice else f"error: {error.what}."
    log = write_detail_log(_WORKDIR.value, line, cause or error.__cause__ or error, error.background)
    print(f"{line} (details: {log or 'none: no log file could be written'})", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(code)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if _AOT_TOPOLOGY.value:
        return _aot(_CONFIG.value)
    if _AOT_REPORT.value:
        raise app.UsageError("--aot_report needs --aot_topology")
    if not _WORKDIR.value:
        raise app.UsageError("--workdir is required (the run directory), except with --aot_topology")
    # Import after flag parsing so that --help is fast and distributed init comes first.
    from dog_jax import storage
    from dog_jax.data import DatasetError
    from dog_jax.train import ConfigError, sharding, train_and_evaluate
    from dog_jax.train.checkpoint import EXIT_STORAGE_FAILURE, CheckpointError, StorageFailure
    from dog_jax.train.lease import EXIT_LEASE_HELD, LeaseHeld, LeaseLost
    from dog_jax.train.preemption import EXIT_PREEMPTED, Preempted, StopOnSignal
    from dog_jax.train.reporting import NonFiniteError

    sharding.maybe_initialize_distributed(_MULTIPROCESS.value)
    console.setup(_VERBOSE.value)
    try:
        storage.configure()  # gs:// run paths; STORAGE_EMULATOR_HOST points every client at an emulator
    except storage.StorageConfigError as error:
        raise SystemExit(f"error: {error}") from None
    try:
        with StopOnSignal() as stop:
            summary = train_and_evaluate(_CONFIG.value, _WORKDIR.value, stop_requested=stop,
                                         takeover_lease=_TAKEOVER_LEASE.value)
    except LeaseLost as error:  # another job took the lease while this run ran: it writes nothing more
        _stop_now(error, EXIT_LEASE_HELD)
    except StorageFailure as error:
        _stop_now(error, EXIT_STORAGE_FAILURE)
    except OSError as error:  # a storage failure outside the checkpointer's writes (set-up, config.json)
        from dog_jax.train.failure_report import short_reason

        where = error.filename or _WORKDIR.value
        _stop_now(StorageFailure(f"a storage operation on {where} failed: {short_reason(error)}"), EXIT_STORAGE_FAILURE,
                  cause=error)
    except LeaseHeld as error:  # another run writes to this workdir (docs/reliability.md)
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(EXIT_LEASE_HELD)
    except (ConfigError, DatasetError, CheckpointError, NonFiniteError) as error:
        raise SystemExit(f"error: {error}") from None
    except Preempted:  # before the first training step: nothing new to checkpoint
        sys.exit(EXIT_PREEMPTED)
    if summary["interrupted"]:
        # Exit code documented in docs/reliability.md: checkpointed, rerun to resume.
        sys.exit(EXIT_PREEMPTED)


def run() -> None:
    """``train.py``'s command line: parse the flags, run :func:`main`, exit with its code."""
    try:
        app.run(main, flags_parser=_parse_flags)
    except SystemExit as stop:
        _EXIT.record(stop)
        raise


if __name__ == "__main__":
    run()
