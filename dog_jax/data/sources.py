"""Where examples come from: tfds datasets by name, ImageNet (manual download), image folders.

A *source* is the encoded (not yet decoded) example stream of one split for this process,
plus its size. Decoding and augmentation happen in ``pipeline.py`` so that JPEGs are only
decoded inside the crop window.

Dataset names accepted by :func:`get_builder`:

* ``"dog_jax_demo"`` (``"dog_jax_demo/tiny"`` for tests) -- the built-in procedural dataset,
  generated on first use;
* ``"imagenet2012"`` -- needs the two ILSVRC2012 tar files in the manual directory; the
  error raised when they are missing says exactly where and how;
* ``"fashion_mnist"`` -- tfds's builder; prepared offline from Debian's
  ``dataset-fashion-mnist`` files when that package is installed (``fashion_mnist.py``);
* any other tfds image-classification dataset (``"cifar10"``, ``"imagenette/320px-v2"``,
  ...), downloaded and prepared by tfds on first use;
* ``"folder:/path/to/root"`` -- ``root/<split>/<class name>/<image>`` via
  ``tfds.folder_dataset.ImageFolder`` (splits are the sub-directory names). Every image
  file is checked when the dataset is opened (signature and, for JPEG, the end-of-image
  marker: one open and two small reads per file), and a damaged one is an error naming
  it -- not skipped -- because skipping would silently change the data a run sees.
"""

from __future__ import annotations

import dataclasses
import os

import tensorflow as tf
import tensorflow_datasets as tfds

from dog_jax.data.errors import DatasetError
from dog_jax.storage import files_under, join, run_path

IMAGENET_FILES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
FOLDER_PREFIX = "folder:"
_JPEG_EXTENSIONS = (".jpg", ".jpeg")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def imagenet_manual_dir(data_dir: str | None, manual_dir: str | None = None) -> str:
    """The directory in which tfds expects the ImageNet tar files."""
    if manual_dir:
        return manual_dir
    root = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    return join(root, "downloads", "manual")


def _prepare_imagenet(builder: tfds.core.DatasetBuilder, data_dir: str | None, manual_dir: str | None) -> None:
    manual = imagenet_manual_dir(data_dir, manual_dir)
    missing = [name for name in IMAGENET_FILES if not (run_path(manual) / name).exists()]
    if missing:
        data_flag = f" --data_dir={data_dir}" if data_dir else ""
        raise DatasetError(
            f"{builder.name} is not prepared in {builder.data_dir} and {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} missing from {manual}: download "
            f"{' and '.join(IMAGENET_FILES)} from https://image-net.org/download-images into {manual}, "
            f"then run `tfds build {builder.name}{data_flag} --manual_dir={manual}` "
            "(or rerun training, which prepares it), or set config.dataset='dog_jax_demo' for the demo.")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))


def get_builder(name: str, data_dir: str | None = None, *, manual_dir: str | None = None,
                prepare: bool = True) -> tfds.core.DatasetBuilder:
    """Returns a prepared tfds builder for ``name`` (see the module docstring for names).

    Args:
      name: dataset name.
      data_dir: tfds data directory (``None``: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
      manual_dir: where manually downloaded files live (ImageNet); default
        ``<data_dir>/downloads/manual``.
      prepare: generate / download the dataset if it is not prepared yet.

    Raises:
      DatasetError: unknown name, missing ImageNet files, missing or empty image folder.
    """
    if name.startswith(FOLDER_PREFIX):
        root = str(run_path(name[len(FOLDER_PREFIX):]))  # local or gs://
        if not run_path(root).is_dir():
            raise DatasetError(f"Image folder {root!r} does not exist; expected {root}/<split>/<class>/<image>.")
        builder = tfds.folder_dataset.ImageFolder(root)
        if not builder.info.splits:
            raise DatasetError(f"Image folder {root!r} holds no images; expected {root}/<split>/<class>/<image>.")
        check_image_folder(root)
        return builder
    if name.split("/")[0] == "dog_jax_demo":
        from dog_jax.data import demo_dataset  # noqa: F401  (registers the builder)
    if name == "fashion_mnist" and prepare:
        from dog_jax.data import fashion_mnist  # offline from Debian's files when installed
        return fashion_mnist.prepare(data_dir)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise DatasetError(
            f"Unknown dataset {name!r}: use a tfds name (see `tfds.list_builders()`), 'dog_jax_demo', "
            "or 'folder:/path/to/root' for an image folder.") from None
    if prepare and not builder.is_prepared():
        if name.split("/")[0].startswith("imagenet2012"):
            _prepare_imagenet(builder, data_dir, manual_dir)
        else:
            builder.download_and_prepare()
    return builder


def _image_problem(path: str) -> str | None:
    """Why ``path`` is not a complete JPEG/PNG file, or None if it looks complete."""
    with run_path(path).open("rb") as f:
        head = f.read(8)
        size = f.seek(0, 2)
        f.seek(8)
        if path.lower().endswith(_JPEG_EXTENSIONS):
            if not head.startswith(b"\xff\xd8\xff"):
                return "not a JPEG (no start-of-image marker)"
            # Some writers pad after the end-of-image marker; a truncated file has none.
            f.seek(max(0, size - 1024))
            if b"\xff\xd9" not in f.read():
                return "truncated JPEG (no end-of-image marker)"
        elif not head.startswith(_PNG_SIGNATURE):
            return "not a PNG (bad signature)"
    return None


def check_image_folder(root: str) -> None:
    """Raises :class:`DatasetError` naming the first damaged image (and how many there are)."""
    bad = []
    for file in files_under(root):
        if file.name.lower().endswith(_JPEG_EXTENSIONS + (".png",)):
            problem = _image_problem(str(file))
            if problem:
                bad.append((str(file), problem))
    if bad:
        path, problem = sorted(bad)[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise DatasetError(f"Image folder {root!r}: {path} is damaged: {problem}{more}; delete or replace it "
                           "and rerun.")


def num_classes(builder: tfds.core.DatasetBuilder) -> int:
    """Number of classes of the ``label`` feature."""
    label = builder.info.features["label"]
    if not isinstance(label, tfds.features.ClassLabel):
        raise DatasetError(f"{builder.name}: feature 'label' is not a class label; only image "
                           "classification datasets with 'image' and 'label' features are supported.")
    return label.num_classes


def split_size(builder: tfds.core.DatasetBuilder, split: str) -> int:
    """Number of examples in ``split`` (any tfds split string)."""
    try:
        return builder.info.splits[split].num_examples
    except (KeyError, ValueError) as error:
        known = ", ".join(builder.info.splits.keys()) or "none"
        raise DatasetError(f"{builder.name} has no split {split!r} (known splits: {known}); "
                           f"set config.train_split / config.eval_split accordingly.") from error


@dataclasses.dataclass(frozen=True)
class Source:
    """This process's share of one split: encoded examples ``{'image': bytes, 'label': int64}``."""

    dataset: tf.data.Dataset
    num_examples: int


def local_source(builder: tfds.core.DatasetBuilder, split: str, *, shard_index: int, shard_count: int,
                 drop_remainder: bool) -> Source:
    """Reads shard ``shard_index`` of ``shard_count`` equal parts of ``split``, without decoding images.

    Evaluation reads one shard per process; training reads ``config.data_shards`` of them
    (default one per device; see ``pipeline.train_dataset``). tfds datasets use ``tfds.split_for_jax_process`` (a shard
    reads only its part of the files); image folders, which have no sub-split support, use
    ``Dataset.shard``. With ``drop_remainder`` all shards get the same number of examples;
    without it the first ``total % shard_count`` shards get one more.
    """
    total = split_size(builder, split)
    if total < shard_count:
        raise DatasetError(f"Split {split!r} of {builder.name} has {total} examples, fewer than the "
                           f"{shard_count} shards it is split into (one per process for evaluation, "
                           "config.data_shards for training); use a larger split.")
    decoders = {"image": tfds.decode.SkipDecoding()}
    read_config = tfds.ReadConfig(shuffle_seed=0, interleave_cycle_length=16)
    if isinstance(builder, tfds.folder_dataset.ImageFolder):
        dataset = builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)
        dataset = dataset.shard(shard_count, shard_index)
        count = total // shard_count + (shard_index < total % shard_count)
        if drop_remainder:
            count = total // shard_count
            dataset = dataset.take(count)
    else:
        subsplit = tfds.split_for_jax_process(split, process_index=shard_index, process_count=shard_count,
                                              drop_remainder=drop_remainder)
        dataset = builder.as_dataset(split=subsplit, decoders=decoders, shuffle_files=False,
                                     read_config=read_config)
        count = split_size(builder, subsplit)
    # A cast: not worth a parallel map. Traced as written, without AutoGraph (dog_jax/data/pipeline.py).
    dataset = dataset.map(tf.autograph.experimental.do_not_convert(_select_features))
    return Source(dataset, count)


def _select_features(example):
    return {"image": example["image"], "label": tf.cast(example["label"], tf.int32)}
