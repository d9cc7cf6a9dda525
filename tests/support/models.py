"""Tiny models for tests that build a train state directly."""

from flax import nnx

from dog_jax import models


def tiny_convmixer():  # BatchNorm: an EMA must average the running statistics too
    return models.create_model("convmixer_512_12", num_classes=10, width=8, depth=1, kernel_size=3, patch_size=2,
                               rngs=nnx.Rngs(0))
