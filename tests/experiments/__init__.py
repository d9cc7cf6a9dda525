"""Tests of dog_jax.experiments: sweeps, runs, collecting and publishing results."""
