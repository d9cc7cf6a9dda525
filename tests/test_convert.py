"""dog_jax.convert: official key names, HorNet against an independent re-derivation, nesting,
error reporting and checkpoint files. timm parity itself is in tests/models/test_timm_parity.py.
"""

from __future__ import annotations

import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.support.requires import TORCH, require

torch = require("torch", "torch is not installed", TORCH)
timm = require("timm", "timm is not installed", TORCH)
from torch import nn  # noqa: E402

from dog_jax.convert import (  # noqa: E402
    CheckpointError,
    StateDictMismatchError,
    load_torch_checkpoint,
    load_torch_state_dict,
    read_state_dict,
    save_safetensors,
    to_torch_state_dict,
)
from dog_jax.models import create_model  # noqa: E402

torch.set_num_threads(1)  # the CI machine has 2 cores shared by 2 test workers

ATOL = 1e-4


def abstract(name: str, **kwargs):
    """A model without random init (cheap): every variable is filled by a strict load."""
    return nnx.eval_shape(lambda: create_model(name, rngs=nnx.Rngs(0), **kwargs))


def randomize_(module: "nn.Module", seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                noise = torch.randn(t.shape, generator=gen)
                if name.endswith("running_var"):
                    t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
                elif t.ndim == 1 or name.endswith(("gamma1", "gamma2")):
                    t.copy_(0.5 * noise + (1.0 if name.endswith("weight") else 0.0))
                else:
                    t.copy_(noise * (t.std() if t.std() > 0 else 0.05))


def numpy_sd(module: "nn.Module") -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def assert_same_state(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def run_nhwc(model, x_nchw: np.ndarray) -> np.ndarray:
    return np.asarray(nnx.jit(lambda m, v: m(v))(model, jnp.asarray(x_nchw.transpose(0, 2, 3, 1))))


# --------------------------------------------------------------------------------------------
# ConvNeXt official names, checked against timm's own official -> timm remapping
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["convnext_atto", "convnextv2_atto"])
def test_convnext_official_names_match_timms_remapping(name):
    ref = timm.create_model(name, num_classes=10)
    randomize_(ref, seed=0)
    timm_sd = numpy_sd(ref)
    model = abstract(name, num_classes=10)
    load_torch_state_dict(model, ref.state_dict())
    official = to_torch_state_dict(model, naming="official")
    assert "downsample_layers.0.0.weight" in official and "stages.3.1.dwconv.weight" in official
    if "v2" in name:
        assert official["stages.0.0.grn.gamma"].shape == (1, 1, 1, 160)   # official GRN layout
        assert official["stages.0.0.pwconv1.weight"].shape == (160, 40)   # official uses Linear
    # timm's checkpoint_filter_fn is timm's knowledge of the official names and layouts.
    remapped = timm.models.convnext.checkpoint_filter_fn(
        {k: torch.from_numpy(v) for k, v in official.items()}, ref)
    assert_same_state({k: v.numpy() for k, v in remapped.items()},
                      {k: v for k, v in timm_sd.items() if not k.endswith("num_batches_tracked")})
    # Official names load back (nested as in the released files) and export to timm exactly.
    again = abstract(name, num_classes=10)
    report = load_torch_state_dict(again, {"model": official, "epoch": 3})
    assert report.naming == "official" and report.ok
    assert_same_state(to_torch_state_dict(again), timm_sd)


# --------------------------------------------------------------------------------------------
# locuslab ConvMixer (bare nn.Sequential indices), written here from the paper's code listing
# --------------------------------------------------------------------------------------------

class _Residual(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x) + x


def locuslab_convmixer(dim, depth, kernel_size, patch_size, n_classes):
    return nn.Sequential(
        nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size), nn.GELU(), nn.BatchNorm2d(dim),
        *[nn.Sequential(
            _Residual(nn.Sequential(nn.Conv2d(dim, dim, kernel_size, groups=dim, padding="same"), nn.GELU(),
                                    nn.BatchNorm2d(dim))),
            nn.Conv2d(dim, dim, kernel_size=1), nn.GELU(), nn.BatchNorm2d(dim)) for _ in range(depth)],
        nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(dim, n_classes))


def test_locuslab_convmixer_names_load_and_export():
    ref = locuslab_convmixer(16, 2, 9, 7, 10)
    randomize_(ref, seed=1)
    ref.eval()
    model = abstract("convmixer_512_12", width=16, depth=2, num_classes=10)
    report = load_torch_state_dict(model, {"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}})
    assert report.naming == "official" and report.ok
    model.eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 28, 28), dtype=np.float32)
    with torch.no_grad():
        want = ref(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run_nhwc(model, x), want, rtol=0, atol=ATOL)
    exported = to_torch_state_dict(model, naming="official")
    fresh = locuslab_convmixer(16, 2, 9, 7, 10)
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()}, strict=True)
    assert_same_state({k: v.numpy() for k, v in fresh.state_dict().items() if "num_batches" not in k},
                      {k: v for k, v in numpy_sd(ref).items() if "num_batches" not in k})


# --------------------------------------------------------------------------------------------
# HorNet: no installable reference. An independent PyTorch re-derivation from the architecture
# facts (official module names), and a NumPy re-derivation of gnconv.
# --------------------------------------------------------------------------------------------

class _LayerNormCF(nn.Module):
    """LayerNorm over the channel axis of NCHW input (the official 'channels_first' LN)."""

    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        return self.weight[:, None, None] * (x - mu) / torch.sqrt(var + 1e-6) + self.bias[:, None, None]


class _GnConv(nn.Module):
    def __init__(self, dim, order, s):
        super().__init__()
        self.dims = [dim // 2 ** i for i in range(order)][::-1]
        self.s = s
        total = sum(self.dims)
        self.proj_in = nn.Conv2d(dim, 2 * dim, 1)
        self.dwconv = nn.Conv2d(total, total, 7, padding=3, groups=total)
        self.proj_out = nn.Conv2d(dim, dim, 1)
        self.pws = nn.ModuleList([nn.Conv2d(self.dims[i], self.dims[i + 1], 1) for i in range(order - 1)])

    def forward(self, x):
        pwa, abc = torch.split(self.proj_in(x), (self.dims[0], sum(self.dims)), dim=1)
        gates = torch.split(self.dwconv(abc) * self.s, self.dims, dim=1)
        y = pwa * gates[0]
        for i, pw in enumerate(self.pws):
            y = pw(y) * gates[i + 1]
        return self.proj_out(y)


class _HorBlock(nn.Module):
    def __init__(self, dim, order):
        super().__init__()
        self.norm1 = _LayerNormCF(dim)
        self.gnconv = _GnConv(dim, order, 1.0 / 3.0)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma1 = nn.Parameter(1e-6 * torch.ones(dim))
        self.gamma2 = nn.Parameter(1e-6 * torch.ones(dim))

    def forward(self, x):
        x = x + self.gamma1[:, None, None] * self.gnconv(self.norm1(x))
        y = self.pwconv2(nn.functional.gelu(self.pwconv1(self.norm2(x.permute(0, 2, 3, 1)))))
        return x + (self.gamma2 * y).permute(0, 3, 1, 2)


class _HorNet(nn.Module):
    def __init__(self, depths=(2, 3, 18, 2), base_dim=64, orders=(2, 3, 4, 5), num_classes=1000):
        super().__init__()
        d = [base_dim * 2 ** i for i in range(4)]
        self.downsample_layers = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(3, d[0], 4, stride=4), _LayerNormCF(d[0]))]
            + [nn.Sequential(_LayerNormCF(d[i]), nn.Conv2d(d[i], d[i + 1], 2, stride=2)) for i in range(3)])
        self.stages = nn.ModuleList(
            [nn.Sequential(*[_HorBlock(d[i], orders[i]) for _ in range(depths[i])]) for i in range(4)])
        self.norm = nn.LayerNorm(d[-1], eps=1e-6)
        self.head = nn.Linear(d[-1], num_classes)

    def forward(self, x):
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        return self.head(self.norm(x.mean((-2, -1))))


def test_hornet_matches_independent_pytorch_rederivation():
    ref = _HorNet(depths=(1, 1, 2, 1), base_dim=16, num_classes=10)
    randomize_(ref, seed=2)
    ref.eval()
    model = abstract("hornet_tiny_7x7", depths=(1, 1, 2, 1), dims=(16, 32, 64, 128), num_classes=10)
    report = load_torch_state_dict(model, {"model": ref.state_dict()})
    assert report.naming == "official" and report.ok
    model.eval()
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 64), dtype=np.float32)
    with torch.no_grad():
        want = ref(torch.from_numpy(x)).numpy()
    assert np.abs(want).max() > 1e-2
    np.testing.assert_allclose(run_nhwc(model, x), want, rtol=0, atol=ATOL)
    assert_same_state(to_torch_state_dict(model, naming="official"), numpy_sd(ref))


def test_hornet_tiny_official_keys_and_shapes_load():
    with torch.device("meta"):  # shapes only, no memory
        ref = _HorNet()  # hornet_tiny_7x7: depths (2, 3, 18, 2), base 64, orders (2, 3, 4, 5)
    shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert sum(np.prod(s) for s in shapes.values()) == 22_409_512  # official parameter count
    assert shapes["stages.3.1.gnconv.dwconv.weight"] == (31 * 512 // 16, 1, 7, 7)  # one dw over sum(dims)
    assert "stages.3.1.gnconv.pws.3.weight" in shapes and "stages.3.1.gnconv.pws.4.weight" not in shapes
    model = abstract("hornet_tiny_7x7")
    report = load_torch_state_dict(model, {k: np.zeros(s, np.float32) for k, s in shapes.items()})
    assert report.ok and len(report.loaded) == len(shapes)
    exported = to_torch_state_dict(model, naming="official")
    assert {k: v.shape for k, v in exported.items()} == shapes


def _np_gnconv(x, w, dims, scale):
    """NumPy gnconv on NHWC input from torch-layout weights ``w`` (independent of dog_jax)."""
    def conv1x1(v, name):
        return np.einsum("nhwc,oc->nhwo", v, w[f"{name}.weight"][:, :, 0, 0]) + w[f"{name}.bias"]

    fused = conv1x1(x, "proj_in")
    pwa, abc = fused[..., :dims[0]], fused[..., dims[0]:]
    k = w["dwconv.weight"][:, 0]                       # (C, 7, 7)
    padded = np.pad(abc, ((0, 0), (3, 3), (3, 3), (0, 0)))
    h, wd = abc.shape[1:3]
    dw = np.zeros_like(abc)
    for i in range(7):
        for j in range(7):
            dw += padded[:, i:i + h, j:j + wd, :] * k[:, i, j]
    dw = (dw + w["dwconv.bias"]) * scale
    gates = np.split(dw, np.cumsum(dims)[:-1], axis=-1)
    y = pwa * gates[0]
    for i in range(len(dims) - 1):
        y = conv1x1(y, f"pws.{i}") * gates[i + 1]
    return conv1x1(y, "proj_out")


@pytest.mark.parametrize("order", [2, 5])
def test_gnconv_matches_numpy_rederivation(order):
    ref = _HorNet(depths=(1, 1, 1, 1), base_dim=32, orders=(order,) * 4, num_classes=1)
    randomize_(ref, seed=order)
    sd = numpy_sd(ref)
    model = abstract("hornet_tiny_7x7", depths=(1, 1, 1, 1), dims=(32, 64, 128, 256), orders=(order,) * 4,
                     num_classes=1)
    load_torch_state_dict(model, sd)
    gnconv = model.stages[0].blocks[0].gnconv
    prefix = "stages.0.0.gnconv."
    weights = {k[len(prefix):]: v.astype(np.float64) for k, v in sd.items() if k.startswith(prefix)}
    x = np.random.default_rng(order).standard_normal((2, 9, 9, 32)).astype(np.float32)
    got = np.asarray(nnx.jit(lambda g, v: g(v))(gnconv, jnp.asarray(x)))
    dims = [32 // 2 ** i for i in range(order)][::-1]
    want = _np_gnconv(x.astype(np.float64), weights, dims, 1 / 3)
    assert np.abs(want).max() > 1e-2
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_hornet_has_no_timm_names():
    with pytest.raises(ValueError, match="official"):
        to_torch_state_dict(abstract("hornet_tiny_7x7", depths=(1, 1, 1, 1), dims=(16,) * 4), naming="timm")


# --------------------------------------------------------------------------------------------
# Input forms, errors, files
# --------------------------------------------------------------------------------------------

def _convmixer_sd(seed: int = 0) -> dict[str, np.ndarray]:
    ref = timm.models.convmixer.ConvMixer(dim=8, depth=2, kernel_size=3, patch_size=4, num_classes=5)
    randomize_(ref, seed)
    return numpy_sd(ref)


def _small_convmixer():
    return abstract("convmixer_512_12", width=8, depth=2, kernel_size=3, patch_size=4, num_classes=5)


@pytest.mark.parametrize("wrap", ["plain", "model", "model_ema", "state_dict", "module.", "torch"])
def test_accepts_nesting_prefixes_and_tensor_types(wrap):
    sd = _convmixer_sd()
    given = {
        "plain": sd,
        "model": {"model": sd, "optimizer": {}, "epoch": 1},
        "model_ema": {"model_ema": sd},
        "state_dict": {"state_dict": sd},
        "module.": {f"module.{k}": v for k, v in sd.items()},
        "torch": {k: torch.from_numpy(v.copy()) for k, v in sd.items()},
    }[wrap]
    model = _small_convmixer()
    report = load_torch_state_dict(model, given)
    assert report.ok and report.naming == "timm"
    assert_same_state(to_torch_state_dict(model), {k: v for k, v in sd.items() if "num_batches" not in k}
                      | {k: np.zeros((), np.int64) for k in sd if "num_batches" in k})


def test_loaded_weights_do_not_alias_torch_storage():
    ref = timm.models.convmixer.ConvMixer(dim=8, depth=1, kernel_size=3, patch_size=4, num_classes=5)
    model = abstract("convmixer_512_12", width=8, depth=1, kernel_size=3, patch_size=4, num_classes=5)
    load_torch_state_dict(model, ref.state_dict())
    before = np.asarray(model.stem_norm.mean[...]).copy()
    with torch.no_grad():
        ref.stem[2].running_mean.add_(1.0)  # what a torch training step does in place
    np.testing.assert_array_equal(np.asarray(model.stem_norm.mean[...]), before)


def test_bfloat16_tensors_are_widened():
    sd = {k: torch.from_numpy(v.copy()).to(torch.bfloat16) if v.dtype == np.float32 else torch.from_numpy(v.copy())
          for k, v in _convmixer_sd().items()}
    model = _small_convmixer()
    load_torch_state_dict(model, sd)
    assert model.head.kernel[...].dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(model.head.kernel[...]), sd["head.weight"].float().numpy().T)


def test_one_error_lists_missing_unexpected_and_misshaped_keys():
    sd = _convmixer_sd()
    del sd["blocks.1.3.running_var"]
    sd["blocks.9.0.fn.0.weight"] = np.zeros((8, 1, 3, 3), np.float32)
    sd["head.weight"] = np.zeros((7, 8), np.float32)
    model = _small_convmixer()
    with pytest.raises(StateDictMismatchError) as info:
        load_torch_state_dict(model, sd)
    message = str(info.value)
    assert "\n" not in message
    assert "missing 1: blocks.1.3.running_var" in message
    assert "unexpected 1: blocks.9.0.fn.0.weight" in message
    assert "mis-shaped 1: head.weight (7, 8) (expected (5, 8))" in message


def test_non_strict_load_reports_and_keeps_the_rest():
    model = _small_convmixer()
    load_torch_state_dict(model, _convmixer_sd(seed=1))
    head_before = np.asarray(model.head.kernel[...]).copy()
    sd = _convmixer_sd(seed=2)
    sd["head.weight"] = np.zeros((7, 8), np.float32)
    sd["head.bias"] = np.zeros((7,), np.float32)
    report = load_torch_state_dict(model, sd, strict=False)
    assert not report.ok and {k for k, _, _ in report.mismatched} == {"head.weight", "head.bias"}
    np.testing.assert_array_equal(np.asarray(model.head.kernel[...]), head_before)
    np.testing.assert_array_equal(np.asarray(model.stem_conv.kernel[...]), sd["stem.0.weight"].transpose(2, 3, 1, 0))
    with pytest.raises(ValueError, match="abstract"):
        load_torch_state_dict(_small_convmixer(), sd, strict=False)


def test_safetensors_round_trip_without_torch(tmp_path, monkeypatch):
    sd = _convmixer_sd()
    model = _small_convmixer()
    load_torch_state_dict(model, sd)
    path = tmp_path / "convmixer.safetensors"
    save_safetensors(model, path)
    monkeypatch.setitem(sys.modules, "torch", None)  # any `import torch` now fails
    again = _small_convmixer()
    report = load_torch_checkpoint(again, path)
    assert report.ok
    assert_same_state(to_torch_state_dict(again), to_torch_state_dict(model))


def test_pth_files_need_torch_with_a_clear_message(tmp_path, monkeypatch):
    sd = _convmixer_sd()
    path = tmp_path / "convmixer.pth"
    torch.save({"model": {k: torch.from_numpy(v) for k, v in sd.items()}}, path)
    model = _small_convmixer()
    assert load_torch_checkpoint(model, path).ok
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(CheckpointError, match=r"needs torch \(pip install 'dog_jax\[torch\]'\)"):
        read_state_dict(path)


def test_file_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        read_state_dict(tmp_path / "missing.safetensors")
    odd = tmp_path / "weights.h5"
    odd.write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a checkpoint this tool can read"):
        read_state_dict(odd)
    with pytest.raises(CheckpointError, match="a directory"):
        read_state_dict(tmp_path)


def test_rejects_non_models_and_bad_naming():
    with pytest.raises(ValueError, match="naming"):
        to_torch_state_dict(_small_convmixer(), naming="keras")
    with pytest.raises(ValueError, match="No PyTorch key mapping"):
        to_torch_state_dict(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))
