"""Schedules and the AdamW weight-decay mask."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dog_jax.train import optim


def test_onecycle_is_convmixers_piecewise_linear_schedule():
    lr = optim.learning_rate_schedule(schedule="onecycle", peak=0.01, total_steps=100)
    expected = [0.0, 0.005, 0.01, 0.01 - 0.5 * (0.01 - 0.0005), 0.0005, 0.00025, 0.0]
    got = [lr(0), lr(20), lr(40), lr(60), lr(80), lr(90), lr(100)]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-9)


def test_cosine_with_warmup():
    lr = optim.learning_rate_schedule(schedule="cosine", peak=4e-3, total_steps=110, warmup_steps=10,
                                      min_learning_rate=1e-6)
    np.testing.assert_allclose([lr(0), lr(5), lr(10), lr(60), lr(110)],
                               [0.0, 2e-3, 4e-3, 1e-6 + 0.5 * (4e-3 - 1e-6), 1e-6], rtol=1e-5)
    with pytest.raises(ValueError, match="Unknown schedule"):
        optim.learning_rate_schedule(schedule="step", peak=1.0, total_steps=10)


def _hand_written_onecycle(step, peak, total):
    # The schedule before it was built from optax pieces: interpolation through four points.
    points = jnp.array([0.0, total * 2 / 5, total * 4 / 5, float(total)], jnp.float32)
    values = jnp.array([0.0, peak, peak / 20.0, 0.0], jnp.float32)
    return jnp.interp(jnp.asarray(step, jnp.float32), points, values)


def _hand_written_cosine(step, peak, total, warmup, floor):
    step = jnp.asarray(step, jnp.float32)
    warmup = min(warmup, total)
    progress = jnp.clip((step - warmup) / max(total - warmup, 1), 0.0, 1.0)
    decayed = floor + 0.5 * (peak - floor) * (1.0 + jnp.cos(jnp.pi * progress))
    return jnp.where(step < warmup, peak * step / max(warmup, 1), decayed)


@pytest.mark.parametrize("total", [1, 7, 100, 1001])
def test_optax_schedules_match_the_hand_written_ones(total):
    steps = np.arange(total + 3)
    lr = optim.learning_rate_schedule(schedule="onecycle", peak=0.01, total_steps=total)
    expected = _hand_written_onecycle(steps, 0.01, total)
    np.testing.assert_allclose(jax.vmap(lr)(steps), expected, rtol=0, atol=1e-7)
    for warmup in (0, 1, total // 10, total):
        lr = optim.learning_rate_schedule(schedule="cosine", peak=4e-3, total_steps=total,
                                          warmup_steps=warmup, min_learning_rate=1e-6)
        expected = _hand_written_cosine(steps, 4e-3, total, warmup, 1e-6)
        np.testing.assert_allclose(jax.vmap(lr)(steps), expected, rtol=0, atol=1e-7)


def test_weight_decay_skips_biases_and_norm_parameters():
    params = {"conv": {"kernel": jnp.ones((3, 3, 1, 4)), "bias": jnp.ones((4,))}, "norm": {"scale": jnp.ones((4,))}}
    tx = optim.create_optimizer(learning_rate=0.0, weight_decay=0.5, grad_clip_norm=1.0)
    grads = {"conv": {"kernel": jnp.zeros((3, 3, 1, 4)), "bias": jnp.zeros((4,))}, "norm": {"scale": jnp.zeros((4,))}}
    # The mask, and with lr 0 (clipping chained in front) nothing moves.
    assert optim.decay_mask(params) == {"conv": {"kernel": True, "bias": False}, "norm": {"scale": False}}
    updates, _ = tx.update(grads, tx.init(params), params)
    assert all(float(jnp.abs(u).max()) == 0 for u in jax.tree.leaves(updates))
    tx = optim.create_optimizer(learning_rate=1.0, weight_decay=0.5)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["conv"]["kernel"], -0.5)  # decoupled decay: -lr * wd * p
    np.testing.assert_allclose(updates["conv"]["bias"], 0.0)
    np.testing.assert_allclose(updates["norm"]["scale"], 0.0)
