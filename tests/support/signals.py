"""A SIGTERM at an exact point of a run: the ``n``-th evaluation batch (the tests of a stop in the
middle of an evaluation, in one process and across processes)."""

import signal


def sigterm_at_eval_batch(steps_module, n: int) -> list:
    """Replaces ``steps_module.make_eval_step`` so that the eval steps it builds send this process
    SIGTERM when called for the ``n``-th time (counted over the run). Returns the list of calls so far
    (one entry per call); the caller restores the original (``monkeypatch``) or lets the process end."""
    original, calls = steps_module.make_eval_step, []

    def make_eval_step(*args, **kwargs):
        eval_step = original(*args, **kwargs)

        def signalling(*step_args):
            calls.append(True)
            if len(calls) == n:
                signal.raise_signal(signal.SIGTERM)
            return eval_step(*step_args)
        return signalling

    steps_module.make_eval_step = make_eval_step
    return calls
