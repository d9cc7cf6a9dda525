"""Input pipeline: dataset sources, per-example augmentation (tf.data) delivering uint8 batches,
and the on-device image work of the jitted steps (normalisation, erasing fill, mixing)."""

from dog_jax._extras import require

require("dog_jax.data", "train", "tensorflow", "tensorflow_datasets")

from dog_jax.data.mixing import MixConfig, mix_batch, smooth_one_hot
from dog_jax.data.pipeline import (IMAGE_DTYPE, TrainAugmentation, batch_bytes, batch_spec, eval_dataset,
                                   eval_num_batches, train_dataset)
from dog_jax.data.errors import DatasetError
from dog_jax.data.sources import Source, get_builder, local_source, num_classes, split_size

__all__ = [
    "DatasetError", "IMAGE_DTYPE", "MixConfig", "Source", "TrainAugmentation", "batch_bytes", "batch_spec",
    "eval_dataset", "eval_num_batches", "get_builder", "local_source", "mix_batch", "num_classes",
    "smooth_one_hot", "split_size", "train_dataset",
]
