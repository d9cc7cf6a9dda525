"""PyTorch key tables: which torch tensor fills which dog_jax variable, and in what layout.

:func:`key_table` walks a ConvMixer, ConvNeXt (V1/V2) or HorNet and lists, in the torch module
order, every state-dict key of the chosen naming ("timm" or the official repositories') with the
model variable it maps to and the tensor's torch shape. :mod:`dog_jax.convert` uses one table for
both directions (load and export), so the names live in one place.
"""

from __future__ import annotations

import dataclasses

from flax import nnx

from dog_jax.models.convmixer import ConvMixer
from dog_jax.models.convnext import ConvNeXt
from dog_jax.models.hornet import HorNet
from dog_jax.models.layers import BatchNorm, DepthwiseConv2D, LayerNorm

NAMINGS = ("timm", "official")


@dataclasses.dataclass(frozen=True)
class Slot:
    """One torch tensor and the model variable it maps to.

    kind: "conv" (OIHW <-> HWIO), "dense" ((out, in) or (out, in, 1, 1) <-> (in, out)),
    "vector" (any shape with C elements and singleton other dims <-> (C,)), or "count"
    (BatchNorm ``num_batches_tracked``: accepted, not stored; exported as 0).
    """

    variable: nnx.Variable | None
    kind: str
    torch_shape: tuple[int, ...]


class KeyTable:
    """Ordered torch-key -> :class:`Slot` mapping, built from a model's modules."""

    def __init__(self):
        self.slots: dict[str, Slot] = {}

    def conv(self, prefix: str, layer: nnx.Conv | DepthwiseConv2D) -> None:
        kernel = layer.kernel
        kh, kw, i, o = kernel.shape
        self.slots[f"{prefix}.weight"] = Slot(kernel, "conv", (o, i, kh, kw))
        self.vector(f"{prefix}.bias", layer.bias)

    def dense(self, prefix: str, layer: nnx.Linear, *, as_conv1x1: bool = False) -> None:
        i, o = layer.kernel.shape
        self.slots[f"{prefix}.weight"] = Slot(layer.kernel, "dense", (o, i, 1, 1) if as_conv1x1 else (o, i))
        self.vector(f"{prefix}.bias", layer.bias)

    def vector(self, key: str, variable: nnx.Variable | None, torch_shape: tuple[int, ...] | None = None) -> None:
        if variable is not None:
            self.slots[key] = Slot(variable, "vector", torch_shape or tuple(variable.shape))

    def layer_norm(self, prefix: str, norm: LayerNorm) -> None:
        self.vector(f"{prefix}.weight", norm.scale)
        self.vector(f"{prefix}.bias", norm.bias)

    def batch_norm(self, prefix: str, norm: BatchNorm) -> None:
        self.vector(f"{prefix}.weight", norm.scale)
        self.vector(f"{prefix}.bias", norm.bias)
        self.vector(f"{prefix}.running_mean", norm.mean)
        self.vector(f"{prefix}.running_var", norm.var)
        self.slots[f"{prefix}.num_batches_tracked"] = Slot(None, "count", ())


def _convmixer_table(model: ConvMixer, naming: str) -> KeyTable:
    # timm: stem.{0 conv, 2 BN}, blocks.i.{0.fn.0 dw, 0.fn.2 BN, 1 conv1x1, 3 BN}, head.
    # locuslab: one nn.Sequential: 0 conv, 2 BN, 3+i blocks, depth+5 head (pool, flatten between).
    t = KeyTable()
    stem = ("stem.0", "stem.2") if naming == "timm" else ("0", "2")
    t.conv(stem[0], model.stem_conv)
    t.batch_norm(stem[1], model.stem_norm)
    for i, block in enumerate(model.blocks):
        p = f"blocks.{i}" if naming == "timm" else f"{3 + i}"
        t.conv(f"{p}.0.fn.0", block.dw)
        t.batch_norm(f"{p}.0.fn.2", block.dw_norm)
        t.dense(f"{p}.1", block.pw, as_conv1x1=True)
        t.batch_norm(f"{p}.3", block.pw_norm)
    if model.head is not None:
        t.dense("head" if naming == "timm" else f"{model.config.depth + 5}", model.head)
    return t


def _convnext_table(model: ConvNeXt, naming: str) -> KeyTable:
    t = KeyTable()
    timm = naming == "timm"
    conv_mlp = timm and model.config.conv_mlp
    t.conv("stem.0" if timm else "downsample_layers.0.0", model.stem.conv)
    t.layer_norm("stem.1" if timm else "downsample_layers.0.1", model.stem.norm)
    for s, stage in enumerate(model.stages):
        if stage.downsample is not None:
            p = f"stages.{s}.downsample" if timm else f"downsample_layers.{s}"
            t.layer_norm(f"{p}.0", stage.downsample.norm)
            t.conv(f"{p}.1", stage.downsample.conv)
        for b, block in enumerate(stage.blocks):
            p = f"stages.{s}.blocks.{b}" if timm else f"stages.{s}.{b}"
            t.conv(f"{p}.conv_dw" if timm else f"{p}.dwconv", block.dw)
            t.layer_norm(f"{p}.norm", block.norm)
            t.dense(f"{p}.mlp.fc1" if timm else f"{p}.pwconv1", block.mlp.fc1, as_conv1x1=conv_mlp)
            if block.mlp.grn is not None:
                c = block.mlp.grn.scale.shape[0]
                if timm:
                    t.vector(f"{p}.mlp.grn.weight", block.mlp.grn.scale)
                    t.vector(f"{p}.mlp.grn.bias", block.mlp.grn.bias)
                else:
                    t.vector(f"{p}.grn.gamma", block.mlp.grn.scale, (1, 1, 1, c))
                    t.vector(f"{p}.grn.beta", block.mlp.grn.bias, (1, 1, 1, c))
            t.dense(f"{p}.mlp.fc2" if timm else f"{p}.pwconv2", block.mlp.fc2, as_conv1x1=conv_mlp)
            t.vector(f"{p}.gamma", block.gamma)
    t.layer_norm("head.norm" if timm else "norm", model.head.norm)
    if model.head.fc is not None:
        t.dense("head.fc" if timm else "head", model.head.fc)
    return t


def _hornet_table(model: HorNet, naming: str) -> KeyTable:
    if naming != "official":
        raise ValueError("timm has no HorNet; use naming='official' (raoyongming/HorNet key names).")
    t = KeyTable()
    t.conv("downsample_layers.0.0", model.stem.conv)
    t.layer_norm("downsample_layers.0.1", model.stem.norm)
    for s, stage in enumerate(model.stages):
        if stage.downsample is not None:
            t.layer_norm(f"downsample_layers.{s}.0", stage.downsample.norm)
            t.conv(f"downsample_layers.{s}.1", stage.downsample.conv)
        for b, block in enumerate(stage.blocks):
            p = f"stages.{s}.{b}"
            t.vector(f"{p}.gamma1", block.gamma1)
            t.vector(f"{p}.gamma2", block.gamma2)
            t.layer_norm(f"{p}.norm1", block.norm1)
            t.dense(f"{p}.gnconv.proj_in", block.gnconv.proj_in, as_conv1x1=True)
            t.conv(f"{p}.gnconv.dwconv", block.gnconv.dw)
            t.dense(f"{p}.gnconv.proj_out", block.gnconv.proj_out, as_conv1x1=True)
            for j, pw in enumerate(block.gnconv.pws):
                t.dense(f"{p}.gnconv.pws.{j}", pw, as_conv1x1=True)
            t.layer_norm(f"{p}.norm2", block.norm2)
            t.dense(f"{p}.pwconv1", block.mlp.fc1)
            t.dense(f"{p}.pwconv2", block.mlp.fc2)
    t.layer_norm("norm", model.head.norm)
    if model.head.fc is not None:
        t.dense("head", model.head.fc)
    return t


def key_table(model: nnx.Module, naming: str) -> KeyTable:
    """The torch keys of ``model`` under ``naming`` ("timm" or "official"), in torch module order."""
    if naming not in NAMINGS:
        raise ValueError(f"naming must be one of {', '.join(NAMINGS)}, got {naming!r}.")
    if isinstance(model, ConvMixer):
        return _convmixer_table(model, naming)
    if isinstance(model, ConvNeXt):
        return _convnext_table(model, naming)
    if isinstance(model, HorNet):
        return _hornet_table(model, naming)
    raise ValueError(f"No PyTorch key mapping for {type(model).__name__}; expected a model from "
                     "dog_jax.models.create_model (ConvMixer, ConvNeXt or HorNet).")


def namings_for(model: nnx.Module) -> tuple[str, ...]:
    """The namings ``model`` has: both for ConvMixer and ConvNeXt; HorNet has no timm version."""
    return ("official",) if isinstance(model, HorNet) else NAMINGS
