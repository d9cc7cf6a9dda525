"""dog_jax.models.tracing: tracers' sharding probe without the trace walk, answers unchanged."""

import contextlib
import threading

import chex
import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from jax._src.interpreters import partial_eval

from dog_jax.models import create_model, registry
from dog_jax.models.tracing import quiet_sharding_probes, replaces_sharding_probe

_TINY_HORNET = {"depths": (1, 1), "dims": (16, 16), "orders": (2, 5)}


def test_the_pinned_jax_still_builds_the_costly_message():
    """If this fails, JAX no longer walks the trace in ``Tracer.sharding`` (upstream: jax-ml/jax pull
    request 40041): dog_jax/models/tracing.py then replaces nothing and can be removed."""
    assert replaces_sharding_probe()


def _probes(x):
    return getattr(x, "sharding", None), hasattr(x, "sharding")


def test_probes_answer_as_before_and_the_property_comes_back():
    original = jax.core.Tracer.__dict__["sharding"]
    answers = []

    def traced(x):
        answers.append(_probes(x))
        with quiet_sharding_probes():
            answers.append(_probes(x))
            with quiet_sharding_probes():  # nested: the outer block restores
                answers.append(_probes(x))
            answers.append(_probes(x))
            with pytest.raises(AttributeError, match="'sharding' attribute is not available"):
                x.sharding  # noqa: B018
        return x

    jax.jit(traced)(jnp.ones(3))
    assert answers == [(None, False)] * 4
    assert jax.core.Tracer.__dict__["sharding"] is original
    concrete = jnp.ones(3)
    with quiet_sharding_probes():
        assert concrete.sharding == jnp.ones(3).sharding  # a concrete array keeps its own
    with pytest.raises(ValueError), quiet_sharding_probes():
        raise ValueError("an error inside the block")
    assert jax.core.Tracer.__dict__["sharding"] is original


def test_blocks_in_several_threads_put_the_property_back():
    original = jax.core.Tracer.__dict__["sharding"]
    barrier = threading.Barrier(4)

    def build():
        barrier.wait()
        for _ in range(20):
            with quiet_sharding_probes():
                jax.make_jaxpr(lambda x: x * getattr(x, "sharding", 2))(1.0)

    threads = [threading.Thread(target=build) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert jax.core.Tracer.__dict__["sharding"] is original


def test_a_model_built_under_a_trace_walks_no_trace_and_is_the_same(monkeypatch):
    """``create_model`` under ``nnx.eval_shape``: no origin message is built (each would walk the whole
    trace), and the abstract model has the eager one's variables, shapes and dtypes. With the block
    replaced by nothing, messages are built again: what the module saves."""
    walks = []
    origin_msg = partial_eval.DynamicJaxprTracer._origin_msg
    monkeypatch.setattr(partial_eval.DynamicJaxprTracer, "_origin_msg",
                        lambda self: walks.append(1) or origin_msg(self))

    def build():
        return create_model("hornet_tiny_7x7", num_classes=3, rngs=nnx.Rngs(0), **_TINY_HORNET)

    abstract = nnx.eval_shape(build)
    assert walks == []
    eager = build()
    shapes = jax.tree.map(lambda v: (v.shape, v.dtype), nnx.state(abstract))
    chex.assert_trees_all_equal(shapes, jax.tree.map(lambda v: (v.shape, v.dtype), nnx.state(eager)))

    monkeypatch.setattr(registry, "quiet_sharding_probes", contextlib.nullcontext)
    nnx.eval_shape(build)
    assert len(walks) > 10  # one per parameter drawn


def test_a_jitted_build_is_bitwise_the_one_with_jaxs_own_probe(monkeypatch):
    """The trainer builds its model inside ``jax.jit``: the parameters do not depend on the block."""
    def params():
        model = create_model("hornet_tiny_7x7", num_classes=3, rngs=nnx.Rngs(0), **_TINY_HORNET)
        return nnx.to_pure_dict(nnx.state(model, nnx.Param))

    quiet = jax.jit(params)()
    monkeypatch.setattr(registry, "quiet_sharding_probes", contextlib.nullcontext)
    chex.assert_trees_all_equal(jax.jit(params)(), quiet)
