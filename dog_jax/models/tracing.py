"""Building a model under a trace (``nnx.eval_shape``, ``jax.jit``) in linear time.

flax NNX 0.12.8 probes ``getattr(value, "sharding", None)`` on every whole-array Variable update
(``variable[...] = value``), and every RNG draw is one: the stream's counter goes up by one, so a
model's construction probes once per initialised parameter. Under a trace the value is a JAX
tracer, whose ``sharding`` property (JAX 0.10.2) raises AttributeError -- as it should, so that the
probe answers None -- but builds the error's message first: it walks every equation traced so far
and pretty-prints the ones that produced the value. Built under ``nnx.eval_shape``, a model's
construction is therefore quadratic in its size: HorNet-T's abstract construction took 2.07 s with
JAX's probe and 0.39 s without the messages nobody reads (benchmarks/abstract_model.py, docs/performance.md).
The same walk was removed from JAX upstream (jax-ml/jax pull request 40041).

:func:`quiet_sharding_probes` gives tracers, for the duration of a block, a ``sharding`` property
that raises the same AttributeError without that message: probes answer exactly as before, only
faster. ``dog_jax.models.create_model`` builds every model inside it, so ``nnx.eval_shape``,
``jax.jit`` and ``jax.eval_shape`` of a model's construction (the trainer, AOT compilation,
restore, export and parameter counts) all gain. If JAX's property ever stops building that
message (a later JAX, or a tracer with a real sharding), nothing is replaced.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import jax

__all__ = ["quiet_sharding_probes", "replaces_sharding_probe"]


def _quiet_sharding(tracer):
    raise AttributeError(f"The 'sharding' attribute is not available on a {type(tracer).__name__} "
                         "(a traced value has no concrete sharding).")


def replaces_sharding_probe() -> bool:
    """Whether this JAX's ``Tracer.sharding`` builds the costly message (so :func:`quiet_sharding_probes`
    replaces it): its getter reads the tracer's origin message (``_origin_msg``)."""
    getter = getattr(jax.core.Tracer.__dict__.get("sharding"), "fget", None)
    return getter is not None and "_origin_msg" in getter.__code__.co_names


class _ProbeSwap:
    """The one process-wide replacement of ``Tracer.sharding``, counted: blocks nest (a model built
    inside a model factory) and may run in several threads; the outermost block puts it back."""

    def __init__(self):
        self._lock = threading.Lock()
        self._depth = 0
        self._original = None

    def enter(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._original = jax.core.Tracer.__dict__["sharding"]
                jax.core.Tracer.sharding = property(_quiet_sharding)
            self._depth += 1

    def exit(self) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                jax.core.Tracer.sharding, self._original = self._original, None


_SWAP = _ProbeSwap()


@contextlib.contextmanager
def quiet_sharding_probes() -> Iterator[None]:
    """Within the block, ``getattr(tracer, "sharding", None)`` answers None without walking the trace.

    Only the AttributeError's message changes (it no longer names the traced operations that made
    the value); every other attribute and every non-tracer value is untouched. Nothing is replaced
    where :func:`replaces_sharding_probe` is False.
    """
    if not replaces_sharding_probe():
        yield
        return
    _SWAP.enter()
    try:
        yield
    finally:
        _SWAP.exit()
