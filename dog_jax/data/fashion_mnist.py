"""Fashion-MNIST offline: tfds's own ``fashion_mnist`` builder, fed from Debian's files.

Debian's ``dataset-fashion-mnist`` package (``apt-get install dataset-fashion-mnist``)
installs the four original idx files of Fashion-MNIST (Xiao et al., 2017: 70,000 28×28
grayscale product photos, 10 classes) under :data:`PACKAGED_DIR`. Their gzip wrappers were
recompressed, so tfds's download cache rejects them (its checksums are of the original
``.gz`` files), but their contents are the original idx bytes. When the package is
installed, :func:`prepare` therefore builds the dataset with a subclass of tfds's
``FashionMNIST`` whose only change is where its four files come from: the same name,
version, features and records, prepared once into ``<data_dir>/fashion_mnist/<version>``,
where ``tfds.builder("fashion_mnist")`` finds it -- the same config works online, where
tfds downloads the files itself.

Images are stored (as tfds does) as 28×28×1 PNGs; the pipelines decode them with three
channels, so the models see the grey value replicated into R, G and B, resized to the
config's ``image_size``.
"""

from __future__ import annotations

import gzip
import os

import tensorflow_datasets as tfds
from tensorflow_datasets.image_classification import mnist

from dog_jax.data.errors import DatasetError
from dog_jax.storage import make_dirs, run_path, write_bytes

NAME = "fashion_mnist"
PACKAGED_DIR = "/usr/share/datasets/fashion-mnist"  # where Debian's dataset-fashion-mnist puts them
_FILES = {
    "train_data": "train-images-idx3-ubyte.gz", "train_labels": "train-labels-idx1-ubyte.gz",
    "test_data": "t10k-images-idx3-ubyte.gz", "test_labels": "t10k-labels-idx1-ubyte.gz",
}
INSTALL_HINT = ("apt-get install dataset-fashion-mnist (Debian/Ubuntu; used offline from "
                f"{PACKAGED_DIR}), or run once with network access so tfds can download it")


def packaged_files_present(directory: str = PACKAGED_DIR) -> bool:
    return all(os.path.exists(os.path.join(directory, name)) for name in _FILES.values())  # local: Debian's files


class _PackagedFashionMNIST(mnist.FashionMNIST, skip_registration=True):
    """tfds's FashionMNIST with its four files read from a local directory, not downloaded."""

    name = NAME
    files_dir = PACKAGED_DIR

    def _split_generators(self, dl_manager):
        # The idx files decompressed next to tfds's own downloads (the originals' content).
        # The download dir lies under the data dir, which may be a bucket (dog_jax.storage).
        target = run_path(dl_manager.download_dir) / "extracted" / "fashion_mnist_packaged"
        make_dirs(target)
        paths = {}
        for key, name in _FILES.items():
            path = target / name[:-len(".gz")]
            if not path.exists():
                source = os.path.join(self.files_dir, name)  # local: Debian's files
                with gzip.open(source, "rb") as packed:  # local: Debian's files
                    write_bytes(path, packed.read())
            paths[key] = str(path)
        return [
            tfds.core.SplitGenerator(name=tfds.Split.TRAIN, gen_kwargs=dict(
                num_examples=60_000, data_path=paths["train_data"], label_path=paths["train_labels"])),
            tfds.core.SplitGenerator(name=tfds.Split.TEST, gen_kwargs=dict(
                num_examples=10_000, data_path=paths["test_data"], label_path=paths["test_labels"])),
        ]


def prepare(data_dir: str | None, *, files_dir: str = PACKAGED_DIR) -> tfds.core.DatasetBuilder:
    """tfds's ``fashion_mnist`` builder, prepared (from ``files_dir`` when the files are there).

    Raises:
      DatasetError: not prepared, the package's files are absent and tfds could not download
        them (one line naming the package to install).
    """
    builder = tfds.builder(NAME, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    if packaged_files_present(files_dir):
        packaged = _PackagedFashionMNIST(data_dir=data_dir)
        packaged.files_dir = files_dir
        packaged.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
        return tfds.builder(NAME, data_dir=data_dir)
    try:
        builder.download_and_prepare()
    except Exception as error:  # noqa: BLE001 -- any download failure gets the same one-line fix.
        reason = " ".join(str(error).split())[:160] or type(error).__name__
        raise DatasetError(f"{NAME} is not prepared in {builder.data_dir}, {files_dir} has no Fashion-MNIST "
                           f"files and downloading failed ({type(error).__name__}: {reason}); "
                           f"install them with: {INSTALL_HINT}.") from None
    return builder
