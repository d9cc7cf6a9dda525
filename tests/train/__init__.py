"""Tests of dog_jax.train: the loop, its parts, TPU compilation, resume and reliability."""
