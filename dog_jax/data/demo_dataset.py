"""A procedurally generated image-classification dataset: the trainer's built-in demo.

``dog_jax_demo`` is a TFDS builder that needs no download: every image is drawn by
numpy from a seed derived from (split, index), so two machines generate byte-identical
data in a few seconds. Images are 32x32 RGB JPEGs; the 10 classes differ only by
spatial structure, never by mean colour:

====  =================  =====================================================
 id   name               structure
====  =================  =====================================================
  0   on_centre          difference-of-Gaussians blob, bright centre, dark surround
  1   off_centre         the same blob with inverted polarity (dark centre)
  2   ring               thin annulus
  3   square             filled square, any rotation
  4   triangle           filled equilateral triangle, any rotation
  5   cross              plus sign, any rotation within +-20 degrees
  6   stripes_horizontal grating within +-20 degrees of horizontal
  7   stripes_vertical   grating within +-20 degrees of vertical
  8   checkerboard       two crossed gratings multiplied (sign), random rotation
  9   dots               texture of 6-14 small dots scattered over the image
====  =================  =====================================================

Nuisance factors drawn independently of the class: position, scale (shapes span
0.12-0.3 of the image; gratings have a 4-9 px period), polarity of the shape classes
(bright-on-dark or dark-on-bright), background level, contrast, a colour tint, 2-4
clutter strokes, and Gaussian pixel noise. The class-conditional mean colour is
therefore the same for all classes (up to sampling noise), so a classifier has to
look at spatial structure -- the thing depthwise receptive fields are for.

Usage::

    import dog_jax.data.demo_dataset  # registers the builder
    builder = tfds.builder("dog_jax_demo", data_dir=...)
    builder.download_and_prepare()     # ~10 s on one CPU core
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

IMAGE_SIZE = 32
CLASS_NAMES = (
    "on_centre", "off_centre", "ring", "square", "triangle",
    "cross", "stripes_horizontal", "stripes_vertical", "checkerboard", "dots",
)
SPLIT_SIZES = {"train": 12_000, "test": 2_000}
# "dog_jax_demo/tiny": for tests and smoke runs. 96 test images (300 before its version 1.1.0): an
# evaluation of six batches of 16, or of one per device on 2 x 2 devices, is what tests need of it.
TINY_SPLIT_SIZES = {"train": 1_200, "test": 96}
# Distinct per-split seeds so that train and test never share an image.
_SPLIT_SEEDS = {"train": 1, "test": 2}
_DATASET_SEED = 20240118  # arbitrary; changing it changes every image (bump VERSION).


def _coordinates(rng: np.random.Generator, size: int, angle: float | None = None):
    """Pixel grid centred at a random point, optionally rotated; returns (u, v) float32 (size, size)."""
    centre = rng.uniform(0.3, 0.7, size=2) * size
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    x, y = x - centre[0], y - centre[1]
    if angle is None:
        angle = rng.uniform(0, 2 * np.pi)
    c, s = np.cos(angle), np.sin(angle)
    return c * x + s * y, -s * x + c * y


def _soft(d: np.ndarray) -> np.ndarray:
    """Anti-aliased inside-test: 1 where d << 0, 0 where d >> 0 (d in pixels)."""
    return np.clip(0.5 - d, 0.0, 1.0)


def draw_pattern(label: int, rng: np.random.Generator, size: int = IMAGE_SIZE) -> np.ndarray:
    """The class's signed structure field in [-1, 1], float32 (size, size), before colour/noise."""
    radius = rng.uniform(0.12, 0.3) * size
    if label in (0, 1):  # centre-surround: DoG with centre std gamma*sigma, surround std sigma.
        u, v = _coordinates(rng, size, angle=0.0)
        d2 = u * u + v * v
        sigma = radius / 1.5
        gamma = rng.uniform(0.3, 0.5)
        # Centre amplitude 1/gamma^2 (the paper's Eq. 2) makes the profile zero-sum.
        field = np.exp(-d2 / (2 * (gamma * sigma) ** 2)) / gamma**2 - np.exp(-d2 / (2 * sigma**2))
        field = field / np.abs(field).max()
        return field if label == 0 else -field
    polarity = rng.choice([-1.0, 1.0])
    if label == 2:
        u, v = _coordinates(rng, size)
        width = rng.uniform(1.0, 2.0)
        field = _soft(np.abs(np.sqrt(u * u + v * v) - radius) - width / 2)
    elif label == 3:
        u, v = _coordinates(rng, size)
        field = _soft(np.maximum(np.abs(u), np.abs(v)) - radius * 0.8)
    elif label == 4:
        u, v = _coordinates(rng, size)
        # Intersection of three half-planes at 120 degrees: an equilateral triangle.
        dist = [u * np.cos(a) + v * np.sin(a) for a in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3,
                                                        np.pi / 2 + 4 * np.pi / 3)]
        field = _soft(np.maximum(np.maximum(dist[0], dist[1]), dist[2]) - radius * 0.6)
    elif label == 5:
        u, v = _coordinates(rng, size, angle=rng.uniform(-0.35, 0.35))
        arm = max(1.2, radius / 3)
        bar_h = np.maximum(np.abs(u) - radius, np.abs(v) - arm / 2)
        bar_v = np.maximum(np.abs(v) - radius, np.abs(u) - arm / 2)
        field = _soft(np.minimum(bar_h, bar_v))
    elif label in (6, 7, 8):
        base = 0.0 if label == 6 else np.pi / 2
        angle = base + rng.uniform(-0.35, 0.35) if label != 8 else rng.uniform(0, np.pi)
        u, v = _coordinates(rng, size, angle=angle)
        period = rng.uniform(4.0, 9.0)
        phase = rng.uniform(0, 2 * np.pi)
        field = np.sin(2 * np.pi * v / period + phase)
        if label == 8:
            field = np.sign(field * np.sin(2 * np.pi * u / period + phase))
        polarity = 1.0  # gratings are their own inverse up to phase.
    else:  # label == 9: dot texture.
        y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
        field = np.zeros((size, size), np.float32)
        for _ in range(rng.integers(6, 15)):
            cx, cy = rng.uniform(2, size - 2, size=2)
            r = rng.uniform(1.0, 1.8)
            field = np.maximum(field, _soft(np.sqrt((x - cx) ** 2 + (y - cy) ** 2) - r))
    return (polarity * field).astype(np.float32)


def _add_clutter(image: np.ndarray, rng: np.random.Generator) -> None:
    """Draws 2-4 short random strokes into ``image`` (H, W, 3) in place."""
    size = image.shape[0]
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    for _ in range(rng.integers(2, 5)):
        p0 = rng.uniform(0, size, size=2)
        direction = rng.normal(size=2)
        direction /= np.linalg.norm(direction) + 1e-6
        length = rng.uniform(3, 8)
        t = np.clip((x - p0[0]) * direction[0] + (y - p0[1]) * direction[1], 0, length)
        dist = np.hypot(x - p0[0] - t * direction[0], y - p0[1] - t * direction[1])
        mask = _soft(dist - 0.6)[..., None]
        colour = rng.uniform(0.0, 1.0, size=3)
        image *= 1 - mask
        image += mask * colour


def generate_example(label: int, rng: np.random.Generator, size: int = IMAGE_SIZE) -> np.ndarray:
    """One uint8 (size, size, 3) image of class ``label``."""
    field = draw_pattern(label, rng, size)
    background = rng.uniform(0.3, 0.7)
    contrast = rng.uniform(0.2, 0.35)
    tint = rng.uniform(0.75, 1.25, size=3)
    image = (background + contrast * field)[..., None] * tint
    _add_clutter(image, rng)
    image += rng.normal(0.0, 0.06, size=image.shape)
    return np.clip(np.round(image * 255), 0, 255).astype(np.uint8)


def generate_split(split: str, start: int = 0, stop: int | None = None):
    """Yields (index, image uint8 (32, 32, 3), label int) for ``split`` deterministically.

    The tiny config's images are the first ``TINY_SPLIT_SIZES[split]`` of the full one.
    """
    stop = SPLIT_SIZES[split] if stop is None else stop
    for index in range(start, stop):
        rng = np.random.default_rng([_DATASET_SEED, _SPLIT_SEEDS[split], index])
        label = index % len(CLASS_NAMES)  # balanced classes; order is shuffled by tfds.
        yield index, generate_example(label, rng), label


DOG_CLASSES = ("on_centre", "off_centre")  # the two classes that *are* DoG-like blobs


class DogJaxDemoConfig(tfds.core.BuilderConfig):
    """Split sizes and classes of one variant of the demo dataset.

    ``classes``: the subset of :data:`CLASS_NAMES` kept, relabelled 0..n-1 in that order; each
    kept image is the full dataset's image of the same split and index (the ``no_dog`` variant
    is the default one minus its on-/off-centre images, not a new set of images).
    """

    def __init__(self, *, split_sizes: dict[str, int], classes: tuple[str, ...] = CLASS_NAMES, **kwargs):
        super().__init__(**kwargs)
        self.split_sizes = dict(split_sizes)
        self.classes = tuple(classes)


class DogJaxDemo(tfds.core.GeneratorBasedBuilder):
    """Procedural 10-class structure dataset (32x32 RGB); see the module docstring.

    Configs: ``dog_jax_demo`` (= ``dog_jax_demo/default``, 12k train / 2k test),
    ``dog_jax_demo/tiny`` (1.2k / 96, generated in about a second, for tests) and
    ``dog_jax_demo/no_dog`` (the default without its two DoG-blob classes: 8 classes, 9.6k / 1.6k),
    which measures how much the demo data's DoG classes favour a DoG init.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: 10 classes, 12k train / 2k test."}
    BUILDER_CONFIGS = [
        DogJaxDemoConfig(name="default", description="12,000 train / 2,000 test images.", split_sizes=SPLIT_SIZES),
        DogJaxDemoConfig(name="tiny", description="1,200 train / 96 test images.", split_sizes=TINY_SPLIT_SIZES,
                         version="1.1.0", release_notes={"1.1.0": "96 test images instead of 300."}),
        DogJaxDemoConfig(name="no_dog", description="The default images without the two DoG-blob classes "
                         "(on_centre, off_centre): 8 classes, 9,600 train / 1,600 test.", split_sizes=SPLIT_SIZES,
                         classes=tuple(name for name in CLASS_NAMES if name not in DOG_CLASSES)),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), encoding_format="jpeg"),
                "label": tfds.features.ClassLabel(names=self.builder_config.classes),
            }),
            supervised_keys=("image", "label"),
            homepage="https://arxiv.org/abs/2401.10178",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download: the data is generated.
        return {split: self._generate_examples(split, size) for split, size in self.builder_config.split_sizes.items()}

    def _generate_examples(self, split: str, size: int):
        kept = {CLASS_NAMES.index(name): new for new, name in enumerate(self.builder_config.classes)}
        for index, image, label in generate_split(split, 0, size):
            if label in kept:
                yield index, {"image": image, "label": kept[label]}
