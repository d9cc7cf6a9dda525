"""Registry, parameter counts, initialization, train/eval, jit + grad and bf16 of dog_jax.models.

Parity with timm is in test_timm_parity.py, the conversion in tests/test_convert.py.
"""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dog_jax.models import create_model, get_model_config, iter_depthwise_convs, list_models
from dog_jax.models.layers import DepthwiseConv2D, PatchifyConv, PointwiseLinear

# Parameter counts of the reference models (timm / official code, 1000 classes), as listed in
# docs/models.md (Variants); atto..nano and v2 large/huge counted with timm 1.0.31. The HorNet
# small..large counts have no installable reference; they are checked only through
# hornet_tiny_7x7 (official count) and the official-key tests in tests/test_convert.py.
REFERENCE_PARAM_COUNTS = {
    "convmixer_512_12": 4_270_056,
    "convmixer_768_32": 21_110_248,
    "convmixer_1024_20_ks9_p14": 24_383_464,
    "convmixer_1536_20": 51_625_960,
    "convnext_atto": 3_695_520,
    "convnext_femto": 5_217_784,
    "convnext_pico": 9_045_672,
    "convnext_nano": 15_593_560,
    "convnext_tiny": 28_589_128,
    "convnext_small": 50_223_688,
    "convnext_base": 88_591_464,
    "convnext_large": 197_767_336,
    "convnext_xlarge": 350_196_968,
    "convnextv2_atto": 3_708_400,
    "convnextv2_femto": 5_233_240,
    "convnextv2_pico": 9_066_280,
    "convnextv2_nano": 15_623_800,
    "convnextv2_tiny": 28_635_496,
    "convnextv2_base": 88_717_800,
    "convnextv2_large": 197_956_840,
    "convnextv2_huge": 660_289_640,
    "hornet_tiny_7x7": 22_409_512,
}

# Tiny variants (one per family / flavour) to keep the tests fast on 2 CPU cores: two stages
# (one downsampling) and equal widths keep the number of modules and of distinct array shapes
# (each one an XLA compile when initialising eagerly) small. The parameter-count, parity and
# conversion tests cover the real four-stage architectures.
TINY = {
    "convmixer": ("convmixer_512_12", dict(width=16, depth=2, kernel_size=5, patch_size=4)),
    "convnext": ("convnext_tiny", dict(depths=(1, 1), dims=(8, 8))),
    "convnextv2": ("convnextv2_tiny", dict(depths=(1, 1), dims=(8, 8))),
    "hornet": ("hornet_tiny_7x7", dict(depths=(1, 1), dims=(16, 16), orders=(2, 5))),
}


def _tiny(family: str, **kwargs):
    name, overrides = TINY[family]
    kwargs.setdefault("num_classes", 10)
    kwargs.setdefault("rngs", nnx.Rngs(0))
    return create_model(name, **overrides, **kwargs)


def _count(model) -> int:
    return sum(math.prod(v.shape) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _images(n: int = 2, size: int = 32, seed: int = 0) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), (n, size, size, 3), jnp.float32)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

def test_registry_lists_every_named_variant():
    names = set(list_models())
    expected = ({"convmixer_512_12", "convmixer_768_32", "convmixer_1024_20_ks9_p14", "convmixer_1536_20"}
                | {f"convnext_{s}" for s in "atto femto pico nano tiny small base large xlarge".split()}
                | {f"convnextv2_{s}" for s in "atto femto pico nano tiny base large huge".split()}
                | {f"hornet_{s}_7x7" for s in "tiny small base large".split()})
    assert names == expected
    assert list_models("hornet") == sorted(n for n in expected if n.startswith("hornet"))


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAM_COUNTS))
def test_parameter_count_equals_reference(name):
    model = nnx.eval_shape(lambda: create_model(name, rngs=nnx.Rngs(0)))
    assert _count(model) == REFERENCE_PARAM_COUNTS[name]


def test_hornet_variants_follow_the_official_widths_and_orders():
    # No installable reference to count against: check the configuration facts instead.
    for size, base in (("tiny", 64), ("small", 96), ("base", 128), ("large", 192)):
        cfg = get_model_config(f"hornet_{size}_7x7")
        assert cfg.dims == (base, 2 * base, 4 * base, 8 * base)
        assert cfg.depths == (2, 3, 18, 2) and cfg.orders == (2, 3, 4, 5)
        assert cfg.kernel_size == 7 and abs(cfg.gnconv_scale - 1 / 3) < 1e-12


def test_unknown_model_name_suggests_close_names():
    with pytest.raises(ValueError, match="convnext_tiny") as info:
        create_model("convnext_tiyn", rngs=nnx.Rngs(0))
    assert "Unknown model" in str(info.value)


def test_unknown_override_is_rejected_with_the_accepted_ones():
    with pytest.raises(ValueError, match="width"):
        create_model("convmixer_512_12", dims=(1, 2), rngs=nnx.Rngs(0))


def test_convmixer_overrides_change_the_architecture():
    model = nnx.eval_shape(lambda: create_model("convmixer_512_12", width=64, depth=3, kernel_size=7, patch_size=14,
                                                rngs=nnx.Rngs(0)))
    assert len(model.blocks) == 3
    assert model.blocks[0].dw.kernel.shape == (7, 7, 1, 64)
    assert model.stem_conv.kernel.shape == (14, 14, 3, 64)


@pytest.mark.parametrize("bad, message", [
    (dict(dw_init="gaussian"), "Unknown initializer 'gaussian'; expected a callable or one of dog,"),
    (dict(dw_init=3), "dw_init must be a name or an initializer callable, got int."),
    (dict(rngs=0), "rngs must be an nnx.Rngs, e.g. nnx.Rngs(0); got int."),
    (dict(drop_path_rate=1.5), "drop_path_rate must be in [0, 1), got 1.5."),
    (dict(num_classes=-1), "num_classes must be a non-negative int, got -1."),
])
def test_bad_arguments_raise_value_error(bad, message):
    kwargs = dict(rngs=nnx.Rngs(0), **TINY["convmixer"][1])
    kwargs.update(bad)
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        create_model("convmixer_512_12", **kwargs)
    assert "\n" not in str(info.value)


def test_hornet_order_needs_divisible_width():
    with pytest.raises(ValueError, match="divisible"):
        create_model("hornet_tiny_7x7", dims=(6, 12, 20, 48), rngs=nnx.Rngs(0))


# --------------------------------------------------------------------------------------------
# Initialization
# --------------------------------------------------------------------------------------------

def _param_dict(model) -> dict[str, np.ndarray]:
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {"/".join(map(str, path)): np.asarray(v.get_value()) for path, v in flat}


def _is_dw_path(path: str) -> bool:
    return path.endswith("dw/kernel")


@pytest.mark.parametrize("family", sorted(TINY))
def test_dog_init_touches_every_depthwise_kernel_and_nothing_else(family):
    reference = _param_dict(_tiny(family, rngs=nnx.Rngs(3)))
    dog_model = _tiny(family, rngs=nnx.Rngs(3), dw_init="dog")
    dog = _param_dict(dog_model)
    dw_paths = {"/".join(map(str, p)) + "/kernel" for p, _ in iter_depthwise_convs(dog_model)}
    assert dw_paths and dw_paths == {p for p in dog if _is_dw_path(p)}
    for path, value in dog.items():
        if path in dw_paths:
            kh, kw, one, channels = value.shape
            assert one == 1
            k = value.reshape(kh * kw, channels)
            np.testing.assert_allclose(k.sum(0), 0.0, atol=1e-5)            # zero sum
            np.testing.assert_allclose(np.abs(k).sum(0), 1.0, atol=5e-2)     # ≈ ±0.5 mass
            centre = value[kh // 2, kw // 2, 0]
            ring = np.concatenate([value[0, :, 0], value[-1, :, 0], value[1:-1, 0, 0], value[1:-1, -1, 0]])
            assert np.all(np.sign(centre) == -np.sign(ring.mean(0)))          # centre–surround
            assert np.any(centre > 0) and np.any(centre < 0)                  # on and off centres
            assert not np.allclose(value, reference[path])
        else:
            np.testing.assert_array_equal(value, reference[path], err_msg=path)


def test_callable_and_named_dw_inits_are_used():
    def ones(key, shape, dtype=jnp.float32):
        return jnp.ones(shape, dtype)

    model = _tiny("convnext", dw_init=ones)
    for _, layer in iter_depthwise_convs(model):
        np.testing.assert_array_equal(np.asarray(layer.kernel[...]), 1.0)
    he = _tiny("convnext", dw_init="he_normal")
    kernels = np.concatenate([np.asarray(layer.kernel[...]).ravel() for _, layer in iter_depthwise_convs(he)])
    assert abs(kernels.std() - math.sqrt(2.0 / 49)) < 0.03  # N(0, 2/fan_in), fan_in = 7·7


def test_convnext_reference_init():
    v1 = create_model("convnext_tiny", depths=(1, 1), dims=(64, 64), head_init_scale=0.5, num_classes=100,
                      rngs=nnx.Rngs(0))
    params = _param_dict(v1)
    for path, value in params.items():
        if path.endswith("bias"):
            np.testing.assert_array_equal(value, 0.0, err_msg=path)      # biases start at 0
        elif "norm/scale" in path:
            np.testing.assert_array_equal(value, 1.0, err_msg=path)
        elif path.endswith("gamma"):
            np.testing.assert_array_equal(value, np.float32(1e-6), err_msg=path)  # layer scale
        elif path.endswith("kernel") and not path.startswith("head"):
            assert abs(value.std() - 0.02) < 0.1 * 0.02 * (1 + 100 / math.sqrt(value.size)), path
    assert abs(params["head/fc/kernel"].std() - 0.01) < 0.0005          # trunc-normal 0.02 × 0.5
    assert abs(params["stages/0/blocks/0/mlp/fc1/kernel"].std() - 0.02) < 0.0005
    v2 = _param_dict(_tiny("convnextv2"))
    grn = [v for p, v in v2.items() if "grn" in p]
    assert len(grn) == 4 and all(np.all(v == 0.0) for v in grn)          # GRN γ, β start at 0
    assert not any(p.endswith("gamma") for p in v2)                       # V2: no layer scale


def test_convmixer_reference_init_is_pytorch_default():
    model = create_model("convmixer_512_12", width=64, depth=1, rngs=nnx.Rngs(0))
    cases = {  # (weight, bias, fan_in)
        "stem": (model.stem_conv.kernel, model.stem_conv.bias, 3 * 7 * 7),
        "dw": (model.blocks[0].dw.kernel, model.blocks[0].dw.bias, 9 * 9),
        "pw": (model.blocks[0].pw.kernel, model.blocks[0].pw.bias, 64),
        "head": (model.head.kernel, model.head.bias, 64),
    }
    for name, (w, b, fan_in) in cases.items():
        bound = 1.0 / math.sqrt(fan_in)
        for v in (np.asarray(w[...]), np.asarray(b[...])):
            assert np.abs(v).max() <= bound + 1e-7, name
            assert np.abs(v).max() > 0.8 * bound, name
    bn = model.blocks[0].dw_norm
    np.testing.assert_array_equal(np.asarray(bn.scale[...]), 1.0)
    np.testing.assert_array_equal(np.asarray(bn.var[...]), 1.0)


def test_drop_path_rates_rise_linearly_over_all_blocks():
    model = nnx.eval_shape(lambda: create_model("convnext_atto", drop_path_rate=0.3, rngs=nnx.Rngs(0)))
    rates = [b.drop_path.rate for s in model.stages for b in s.blocks]
    np.testing.assert_allclose(rates, np.linspace(0, 0.3, 12), atol=1e-7)


# --------------------------------------------------------------------------------------------
# Forward, modes, jit + grad, bf16
# --------------------------------------------------------------------------------------------

def test_drop_path_only_in_training():
    model = _tiny("convnext", drop_path_rate=0.5, ls_init_value=1.0)
    x = _images()
    forward = nnx.jit(lambda m, x: m(x))
    model.eval()
    a, b = forward(model, x), forward(model, x)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    model.train()
    outs = [np.asarray(forward(model, x)) for _ in range(4)]
    assert any(not np.allclose(outs[0], o) for o in outs[1:])


def test_batchnorm_modes():
    model = _tiny("convmixer")
    x = _images()
    before = np.asarray(model.stem_norm.mean[...]).copy()
    model.eval()
    model(x)
    np.testing.assert_array_equal(np.asarray(model.stem_norm.mean[...]), before)
    model.train()
    model(x)
    assert not np.allclose(np.asarray(model.stem_norm.mean[...]), before)


@pytest.mark.parametrize("family", sorted(TINY))
def test_jit_forward_and_grad(family):
    model = _tiny(family, drop_path_rate=0.1)
    model.train()
    x, y = _images(), jnp.array([1, 7])

    @nnx.jit
    def step(model, x, y):
        def loss_fn(model):
            logits = model(x)
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))
        return nnx.value_and_grad(loss_fn)(model)

    loss, grads = step(model, x, y)
    assert loss.shape == () and np.isfinite(float(loss))
    leaves = jax.tree.leaves(grads)
    assert leaves and all(np.all(np.isfinite(np.asarray(g))) for g in leaves)
    dw_grads = [np.asarray(v.get_value()) for path, v in nnx.to_flat_state(grads) if path[-2:] == ("dw", "kernel")]
    assert dw_grads and all(np.abs(g).max() > 0 for g in dw_grads)
    model.eval()
    logits = nnx.jit(lambda m, x: m(x))(model, x)
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32


@pytest.mark.parametrize("family", ["convmixer", "convnextv2"])
def test_bf16_compute_with_f32_params(family):
    ref = _tiny(family)
    bf16 = _tiny(family, dtype=jnp.bfloat16)
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(nnx.state(bf16, nnx.Param)))
    nnx.update(bf16, nnx.state(ref))
    ref.eval()
    bf16.eval()
    x = _images()
    forward = nnx.jit(lambda m, x: m(x))
    want = np.asarray(forward(ref, x))
    got = forward(bf16, x)
    assert got.dtype == jnp.float32
    got = np.asarray(got)
    assert np.all(np.isfinite(got))
    assert np.abs(got - want).max() <= 0.05 * np.abs(want).max() + 1e-3
    grads = nnx.jit(nnx.grad(lambda m, x: jnp.sum(m(x))))(bf16, x)
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))


def test_num_classes_zero_returns_features():
    model = nnx.eval_shape(lambda: _tiny("convnext", num_classes=0))
    model.eval()
    out = nnx.eval_shape(lambda m, x: m(x), model, _images())
    assert out.shape == (2, 8)


def test_depthwise_layer_rejects_wrong_init_shape():
    def bad(key, shape, dtype=jnp.float32):
        return jnp.zeros(shape[:-1] + (1,), dtype)

    with pytest.raises(ValueError, match="requested shape"):
        DepthwiseConv2D(4, 3, kernel_init=bad, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("shape, patch", [((2, 12, 12, 3), 4), ((2, 9, 11, 5), 2), ((1, 14, 14, 3), 7)])
def test_patchify_conv_is_the_strided_valid_convolution(shape, patch):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    layer = PatchifyConv(shape[-1], 6, patch, bias_init=nnx.initializers.normal(1.0), rngs=nnx.Rngs(0))
    reference = nnx.Conv(shape[-1], 6, (patch, patch), strides=(patch, patch), padding="VALID", rngs=nnx.Rngs(1))
    reference.kernel[...], reference.bias[...] = layer.kernel[...], layer.bias[...]
    got, want = layer(x), reference(x)
    assert got.shape == want.shape == (shape[0], shape[1] // patch, shape[2] // patch, 6)  # odd rest dropped
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    grads = [jax.grad(lambda inp, m=m: jnp.sum(m(inp) ** 2))(x) for m in (layer, reference)]
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-5, atol=1e-5)
    assert PatchifyConv(3, 4, 2, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))(x[..., :3]).dtype == jnp.bfloat16


def test_pointwise_linear_is_linear_over_channels():
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, 7, 8)), jnp.float32)
    layer = PointwiseLinear(8, 3, rngs=nnx.Rngs(0))
    reference = nnx.Linear(8, 3, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(layer(x), reference(x), rtol=1e-6, atol=1e-6)
    assert layer(x).shape == (2, 5, 7, 3)


def test_old_dw_kernel_init_keyword_still_works_with_a_warning():
    with pytest.warns(DeprecationWarning, match="pass dw_init"):
        old = _tiny("convmixer", rngs=nnx.Rngs(5), dw_kernel_init="dog")
    new = _tiny("convmixer", rngs=nnx.Rngs(5), dw_init="dog")
    with pytest.raises(ValueError, match="Pass dw_init=... only"), pytest.warns(DeprecationWarning):
        _tiny("convmixer", rngs=nnx.Rngs(5), dw_init="dog", dw_kernel_init="he_normal")
    for (_, a), (_, b) in zip(iter_depthwise_convs(old), iter_depthwise_convs(new)):
        np.testing.assert_array_equal(a.kernel[...], b.kernel[...])
