"""Tests of dog_jax.models: the registry, the families, basis kernels, parity with timm."""
