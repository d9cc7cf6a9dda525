"""Tests of dog_jax.data: sources, tf.data pipelines, augmentation and mixing."""
