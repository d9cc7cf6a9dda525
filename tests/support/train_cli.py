"""``train.py`` run in the test process: its flag parsing and ``main()``, as a run has them."""

import sys

import pytest


def exit_message(monkeypatch, argv: list[str]):
    """Runs train.py's ``main`` with ``argv`` (``argv[0]`` = "train.py"), which must end in ``SystemExit``;
    returns its code (the one-line message for an error). This process's logging set-up and absl's
    flags are left as they were."""
    from absl import flags

    import train

    monkeypatch.setattr(train.console, "setup", lambda verbose: None)
    monkeypatch.setattr(sys, "argv", argv)  # ml_collections reads the --config.<field> overrides there, as in a run
    try:
        with pytest.raises(SystemExit) as exit_info:
            train.main(train._parse_flags(argv))
    finally:
        flags.FLAGS.unparse_flags()
        # ml_collections defines a flag per --config.<field> override while parsing; a later parse
        # of the same field in this process would find it defined twice.
        for name in [name for name in flags.FLAGS if name.startswith("config.")]:
            delattr(flags.FLAGS, name)
    return exit_info.value.code
