"""Tests of dog_jax.analysis: checkpoint readers, kernel clustering and naming, fits."""
