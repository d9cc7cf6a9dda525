"""Tests of dog_jax.ops: each operation against a float64 reference, the native CPU kernels, "auto"."""
