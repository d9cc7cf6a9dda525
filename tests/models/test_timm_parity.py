"""Numerical parity of dog_jax models with timm (PyTorch) in float32.

Randomly initialised timm models — with every norm parameter, bias, layer scale, GRN parameter
and BatchNorm running statistic randomised too, so nothing sits at a trivial value — are
converted with ``load_torch_state_dict``; logits must agree within 1e-4 max abs. The weights
are then exported with ``to_torch_state_dict`` into a fresh timm model with ``strict=True``,
which must give the same logits again.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.support.requires import TORCH, require

torch = require("torch", "torch is not installed", TORCH)
timm = require("timm", "timm is not installed", TORCH)

from dog_jax.convert import load_torch_state_dict, to_torch_state_dict  # noqa: E402
from dog_jax.models import create_model  # noqa: E402

torch.set_num_threads(1)  # the CI machine has 2 cores shared by 2 test workers

ATOL = 1e-4


def randomize_(module: "torch.nn.Module", seed: int) -> None:
    """Randomises every floating tensor of a torch model in place (weights keep their scale)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            noise = torch.randn(t.shape, generator=gen)
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif t.ndim == 1:  # biases, norm scales, layer scales, GRN, running means
                t.copy_(0.5 * noise + (1.0 if name.endswith("weight") else 0.0))
            else:
                t.add_(0.5 * t.std() * noise)


def images(size: int, seed: int = 0) -> np.ndarray:
    """(2, 3, size, size) float32 NCHW batch."""
    return np.random.default_rng(seed).standard_normal((2, 3, size, size), dtype=np.float32)


def torch_logits(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def jax_logits(model, x: np.ndarray) -> np.ndarray:
    return np.asarray(nnx.jit(lambda m, v: m(v))(model, jnp.asarray(x.transpose(0, 2, 3, 1))))


def check_eval_parity(name: str, make_timm, size: int, **overrides) -> None:
    ref = make_timm()
    randomize_(ref, seed=1)
    ref.eval()
    # Abstract model: the random init would be overwritten anyway (and costs compile time).
    model = nnx.eval_shape(lambda: create_model(name, num_classes=10, rngs=nnx.Rngs(0), **overrides))
    report = load_torch_state_dict(model, ref.state_dict())
    assert report.naming == "timm" and report.ok
    model.eval()
    x = images(size)
    want = torch_logits(ref, x)
    got = jax_logits(model, x)
    assert np.abs(want).max() > 1e-2  # a meaningful comparison, not two near-zero outputs
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)

    fresh = make_timm()
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in to_torch_state_dict(model).items()}, strict=True)
    fresh.eval()
    np.testing.assert_allclose(torch_logits(fresh, x), want, rtol=0, atol=ATOL)


CONVNEXT_CASES = {
    # name: (timm constructor kwargs, our overrides)
    "convnext_atto": (dict(), dict()),                                        # conv_mlp=True in timm
    "convnextv2_atto": (dict(), dict()),                                      # GRN, conv_mlp=True
    "convnext_atto/linear-mlp": (dict(conv_mlp=False), dict(conv_mlp=False)),
    "convnextv2_tiny/small": (dict(depths=(1, 1, 2, 1), dims=(16, 32, 64, 128)),
                              dict(depths=(1, 1, 2, 1), dims=(16, 32, 64, 128))),  # GRN, Linear MLP
}


@pytest.mark.parametrize("case", sorted(CONVNEXT_CASES))
def test_convnext_eval_parity_with_timm(case):
    name = case.split("/")[0]
    timm_kwargs, overrides = CONVNEXT_CASES[case]

    def make_timm():
        return timm.create_model(name, num_classes=10, **timm_kwargs)

    check_eval_parity(name, make_timm, size=64, **overrides)


CONVMIXER_CASES = {
    # name: (timm ConvMixer kwargs, our overrides); narrower and shallower than the real models.
    "convmixer_512_12": (dict(dim=32, depth=2, kernel_size=9, patch_size=7), dict(width=32, depth=2)),
    "convmixer_768_32": (dict(dim=24, depth=2, kernel_size=7, patch_size=7, act_layer=torch.nn.ReLU),
                         dict(width=24, depth=2)),
    "convmixer_1024_20_ks9_p14": (dict(dim=16, depth=2, kernel_size=9, patch_size=14), dict(width=16, depth=2)),
}


@pytest.mark.parametrize("name", sorted(CONVMIXER_CASES))
def test_convmixer_eval_parity_with_timm(name):
    timm_kwargs, overrides = CONVMIXER_CASES[name]

    def make_timm():
        return timm.models.convmixer.ConvMixer(num_classes=10, **timm_kwargs)

    check_eval_parity(name, make_timm, size=56, **overrides)


def test_convmixer_train_mode_parity_including_running_stats():
    ref = timm.models.convmixer.ConvMixer(dim=16, depth=2, kernel_size=5, patch_size=4, num_classes=10)
    randomize_(ref, seed=2)
    model = nnx.eval_shape(lambda: create_model("convmixer_512_12", width=16, depth=2, kernel_size=5, patch_size=4,
                                                num_classes=10, rngs=nnx.Rngs(0)))
    load_torch_state_dict(model, ref.state_dict())
    ref.train()
    model.train()
    x = images(32, seed=3)
    forward = nnx.jit(lambda m, v: m(v))
    for step in range(2):  # the second step normalises nothing differently but reads updated stats
        want = torch_logits(ref, x + step)
        got = np.asarray(forward(model, jnp.asarray((x + step).transpose(0, 2, 3, 1))))
        np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)
    ours = to_torch_state_dict(model)
    theirs = ref.state_dict()
    stats = [k for k in theirs if k.endswith(("running_mean", "running_var"))]
    assert len(stats) == 2 * 5
    for key in stats:
        np.testing.assert_allclose(ours[key], theirs[key].numpy(), rtol=1e-5, atol=1e-5, err_msg=key)
    # Eval mode afterwards uses those updated statistics on both sides.
    ref.eval()
    model.eval()
    np.testing.assert_allclose(jax_logits(model, x), torch_logits(ref, x), rtol=0, atol=ATOL)
