"""Basis-parameterised depthwise kernels (``dw_param="basis"``, dog_jax.models.basis)."""

from __future__ import annotations

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dog_jax.initializers import dog
from dog_jax.models import create_model
from dog_jax.models.basis import (
    BASIS_NAMES,
    BasisDepthwiseConv2D,
    basis_kernels,
    basis_stack,
    materialize,
)
from dog_jax.models.layers import iter_depthwise_convs
from tests.support.requires import TORCH, require

_TINY = {"dims": (8, 16, 32, 64), "depths": (1, 1, 1, 1)}
SMALL = {
    "convmixer_512_12": {"width": 16, "depth": 2, "kernel_size": 5},
    "convnext_atto": _TINY,
    "convnextv2_atto": _TINY,
    "hornet_tiny_7x7": _TINY,
}


def _flat(model) -> dict[str, np.ndarray]:
    return {"/".join(map(str, k)): np.asarray(v) for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


@pytest.mark.slow
@pytest.mark.parametrize("name, init", [(n, "dog") for n in sorted(SMALL)] + [("convnext_atto", "dog_he")])
def test_dog_init_reproduces_dog_kernels_exactly_in_every_family(name, init):
    """Same key -> bit-identical depthwise kernels, and every other parameter identical."""
    spec = dog(norm="he") if init == "dog_he" else "dog"
    free = create_model(name, num_classes=3, dw_init=spec, rngs=nnx.Rngs(0), **SMALL[name])
    basis = create_model(name, num_classes=3, dw_init=spec, rngs=nnx.Rngs(0), dw_param="basis",
                         **SMALL[name])
    pairs = list(zip(iter_depthwise_convs(free), iter_depthwise_convs(basis), strict=True))
    assert pairs and all(isinstance(lb, BasisDepthwiseConv2D) for _, (_, lb) in pairs)
    for (pa, la), (pb, lb) in pairs:
        assert pa == pb
        np.testing.assert_array_equal(np.asarray(lb.kernel[...]), np.asarray(la.kernel[...]))
    fa, fb = _flat(free), _flat(basis)
    others = {k for k in fa if not k.endswith("dw/kernel")}
    assert others == {k for k in fb if "basis_" not in k}
    for k in others:
        np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 32, 32, 3)), jnp.float32)
    free.eval(), basis.eval()
    np.testing.assert_array_equal(np.asarray(free(x)), np.asarray(basis(x)))


def test_gradients_match_finite_differences_float64():
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        c = jnp.asarray(rng.standard_normal((3, len(BASIS_NAMES))), jnp.float64)
        ls = jnp.asarray([-0.3, 0.1, 0.4], jnp.float64)
        g = jnp.asarray([0.31, 0.43, 0.77], jnp.float64)  # away from centre/surround ties at k = 7
        w = jnp.asarray(rng.standard_normal((7, 7, 1, 3)), jnp.float64)

        def loss(c, ls, g):
            return jnp.sum(jnp.sin(3.0 * basis_kernels(c, ls, g, 7, 7)) * w)

        grads = jax.grad(loss, argnums=(0, 1, 2))(c, ls, g)
        eps = 1e-6
        for arg, grad in enumerate(grads):
            args = [c, ls, g]
            flat = np.asarray(args[arg]).ravel()
            fd = np.zeros_like(flat)
            for i in range(flat.size):
                plus, minus = flat.copy(), flat.copy()
                plus[i] += eps
                minus[i] -= eps
                a_p = list(args)
                a_p[arg] = jnp.asarray(plus.reshape(args[arg].shape))
                a_m = list(args)
                a_m[arg] = jnp.asarray(minus.reshape(args[arg].shape))
                fd[i] = (loss(*a_p) - loss(*a_m)) / (2 * eps)
            assert np.all(np.abs(np.asarray(grad).ravel()) > 0)
            np.testing.assert_allclose(np.asarray(grad).ravel(), fd, rtol=1e-6, atol=1e-8)


def test_jit_and_vmap_equal_eager():
    rng = np.random.default_rng(2)
    c = jnp.asarray(rng.standard_normal((4, 5, 7)), jnp.float32)
    ls = jnp.asarray(rng.uniform(-0.5, 0.5, (4, 5)), jnp.float32)
    g = jnp.asarray(rng.uniform(0.05, 0.5, (4, 5)), jnp.float32)
    eager = np.stack([np.asarray(basis_kernels(c[i], ls[i], g[i], 7, 5)) for i in range(4)])
    batched = jax.jit(jax.vmap(lambda a, b, d: basis_kernels(a, b, d, 7, 5)))(c, ls, g)
    assert batched.shape == (4, 7, 5, 1, 5)
    np.testing.assert_allclose(np.asarray(batched), eager, atol=1e-6)


def test_jitted_model_gradient_reaches_every_basis_parameter():
    model = create_model("convnext_atto", num_classes=3, dw_init="dog", rngs=nnx.Rngs(0),
                         dw_param="basis", **SMALL["convnext_atto"])
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 32, 32, 3)), jnp.float32)

    @nnx.jit
    def grads(m):
        return nnx.grad(lambda m: jnp.sum(m(x) ** 2))(m)

    flat = _flat_state(grads(model))
    basis_grads = {k: v for k, v in flat.items() if "basis_" in k}
    assert len(basis_grads) == 3 * 4
    for k, v in basis_grads.items():
        assert np.all(np.isfinite(v)), k
        if k.endswith("basis_log_scale"):
            # At the DoG start only the DoG term is active, and the scale enters the Gaussian terms only.
            assert np.all(v == 0), k
        else:  # (some dx/dy entries are 0 where the map is a single pixel: only the centre tap acts)
            assert np.any(v != 0), k


def _flat_state(state) -> dict[str, np.ndarray]:
    return {"/".join(map(str, k)): np.asarray(v) for k, v in nnx.to_flat_state(state)}


def test_non_dog_init_starts_from_the_projection_of_the_free_kernel():
    """A kernel inside the basis span (at the starting γ and scale) is reproduced."""
    def in_span(key, shape, dtype=jnp.float32):
        kh, kw, _, c = shape
        g = jnp.full((c,), 0.25, jnp.float32)
        from dog_jax.models.basis import eq3_scale
        coeffs = jax.random.normal(key, (c, len(BASIS_NAMES)))
        return basis_kernels(coeffs, jnp.log(eq3_scale(g)), g, kh, kw).astype(dtype)

    layer = BasisDepthwiseConv2D(6, 7, kernel_init=in_span, rngs=nnx.Rngs(3))
    expected = in_span(nnx.Rngs(3).params(), (7, 7, 1, 6))
    np.testing.assert_allclose(np.asarray(layer.kernel[...]), np.asarray(expected), atol=2e-5)
    # A reference-initialised basis model runs and its kernels are not all zero.
    model = create_model("convmixer_512_12", num_classes=3, rngs=nnx.Rngs(0), dw_param="basis",
                         **SMALL["convmixer_512_12"])
    for _, lb in iter_depthwise_convs(model):
        assert float(jnp.abs(lb.kernel[...]).max()) > 0


def test_basis_elements_have_the_documented_symmetries():
    s = basis_stack(jnp.zeros((1,)), jnp.full((1,), 0.3), 7, 7)[0]
    assert s.shape == (7, 7, 7)
    np.testing.assert_allclose(float(s[0].sum()), 1.0, rtol=1e-6)   # g sums to 1
    np.testing.assert_allclose(np.asarray(s[1]), np.asarray(s[2]).T, atol=1e-7)  # dx = dyᵀ
    np.testing.assert_allclose(np.asarray(s[1]), -np.asarray(s[1])[:, ::-1], atol=1e-7)  # odd in x
    np.testing.assert_allclose(np.asarray(s[3]), np.asarray(s[5]).T, atol=1e-7)
    np.testing.assert_allclose(float(s[6].sum()), 0.0, atol=1e-6)   # the DoG is zero-sum


def test_wrong_dw_param_and_loading_free_kernels_fail_clearly():
    with pytest.raises(ValueError, match="dw_param must be one of free, basis"):
        create_model("convnext_atto", dw_param="gabor", rngs=nnx.Rngs(0))
    layer = BasisDepthwiseConv2D(4, 5, kernel_init=dog(), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="basis-parameterised"):
        layer.kernel.set_value(jnp.zeros((5, 5, 1, 4)))


def test_materialize_turns_basis_parameters_into_kernels():
    model = create_model("convmixer_512_12", num_classes=3, dw_init="dog", rngs=nnx.Rngs(0),
                         dw_param="basis", **SMALL["convmixer_512_12"])
    arrays = materialize(_flat(model), 5)
    assert not any("basis_" in k for k in arrays)
    for path, layer in iter_depthwise_convs(model):
        key = "/".join(map(str, path)) + "/kernel"
        np.testing.assert_array_equal(arrays[key], np.asarray(layer.kernel[...]))


def test_export_loads_into_timm_strict_with_equal_outputs():
    torch = require("torch", "torch is not installed", TORCH)
    timm = require("timm", "timm is not installed", TORCH)
    from dog_jax.convert import to_torch_state_dict

    torch.set_num_threads(1)
    model = create_model("convmixer_512_12", num_classes=10, dw_init="dog", rngs=nnx.Rngs(0),
                         dw_param="basis", width=16, depth=2)
    # Move the basis away from its DoG start so every term contributes to the exported kernel.
    for _, layer in iter_depthwise_convs(model):
        c = layer.basis_coeffs[...]
        layer.basis_coeffs[...] = c + 0.1 * jax.random.normal(jax.random.key(5), c.shape)
    model.eval()
    ref = timm.models.convmixer.ConvMixer(dim=16, depth=2, kernel_size=9, patch_size=7, num_classes=10)
    sd = to_torch_state_dict(model)
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    ref.eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 56, 56)).astype(np.float32)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x)).numpy()
    got = np.asarray(model(jnp.asarray(x.transpose(0, 2, 3, 1))))
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_parameter_count_table_in_docs_matches_the_models():
    from dog_jax.models.registry import parameter_counts

    text = (Path(__file__).resolve().parents[2] / "docs" / "models.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| ([\d,]+ \| [\d,]+) \|", text, flags=re.MULTILINE))
    for name in ("convmixer_512_12", "convnext_atto", "hornet_tiny_7x7"):
        free, basis = (int(v.replace(",", "")) for v in rows[name].split(" | "))
        assert (free, basis) == parameter_counts(name), name


@pytest.mark.parametrize("record", ["kernel size", "model and overrides only"])
def test_analysis_reads_a_basis_checkpoint_as_materialised_kernels(tmp_path, record):
    """The kernel size comes from the checkpoint's model record: its ``dw_kernel_size`` (the model's
    registered 9 would give 9x9 kernels), or, in records written before that field, the overrides."""
    import orbax.checkpoint as ocp

    from dog_jax.analysis import extract_depthwise_kernels

    overrides = {"width": 8, "depth": 1, "kernel_size": 5}
    model = create_model("convmixer_512_12", num_classes=3, dw_init="dog", rngs=nnx.Rngs(0),
                         dw_param="basis", **overrides)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    if record == "kernel size":
        info = {"model": "convmixer_512_12", "model_overrides": {"dw_param": "basis"}, "dw_kernel_size": 5}
    else:
        info = {"model": "convmixer_512_12", "model_overrides": {**overrides, "dw_param": "basis"}}
    with ocp.CheckpointManager(tmp_path / "ckpt", item_names=("state", "model")) as mgr:
        mgr.save(1, args=ocp.args.Composite(state=ocp.args.StandardSave({"params": params}),
                                            model=ocp.args.JsonSave(info)))
        mgr.wait_until_finished()
    layers = extract_depthwise_kernels(tmp_path / "ckpt")
    (_, layer), = iter_depthwise_convs(model)
    assert [entry.name for entry in layers] == ["state/params/blocks/0/dw/kernel"]
    expected = np.transpose(np.asarray(layer.kernel[...])[:, :, 0, :], (2, 0, 1))
    np.testing.assert_allclose(layers[0].kernels, expected, atol=1e-7)
