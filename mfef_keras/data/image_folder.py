"""Image-folder datasets: ``ROOT/{train,test[,valid]}/<class>/*.{png,jpg,jpeg}``, CINIC-10 among them."""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from mfef_keras.data.info import DatasetInfo
from mfef_keras.data.source import Augmentation

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
REQUIRED_SPLITS = ("train", "test")
OPTIONAL_SPLITS = ("valid",)
LAYOUT = "{root}/{{train,test[,valid]}}/<class>/*.{{png,jpg,jpeg}}"
# Mean/std of a generic folder come from this many training images (a random sample, see `_scan`).
STATS_SAMPLE = 2000
ORDER_SEED = 0
# Published with CINIC-10 (Darlow et al., 2018).
CINIC10_MEAN = (0.47889522, 0.47227842, 0.43047404)
CINIC10_STD = (0.24205776, 0.23828046, 0.25874835)
CINIC10_URL = "https://datashare.ed.ac.uk/handle/10283/3192"
_GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})


@dataclass(frozen=True)
class FolderIndex:
    """The files of an image folder.

    Args:
        class_names: sorted class sub-directory names of the train split; labels index this tuple.
        files: split name -> (image paths, int32 labels), in a fixed-seed random order so that any prefix
            (the ``limit`` argument) is a fair sample of all classes.
    """

    class_names: tuple[str, ...]
    files: dict[str, tuple[tuple[str, ...], np.ndarray]]


def read_image(path: str, height: int, width: int, channels: int) -> np.ndarray:
    """Decode one image file to uint8 ``(height, width, channels)``, resizing (bilinear) if needed.

    Args:
        path: image file.
        height: output height.
        width: output width.
        channels: 1 (grayscale) or 3 (RGB); other modes are converted.

    Raises:
        ValueError: naming ``path`` when the file cannot be decoded.
    """
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    # PIL reports broken files as OSError (UnidentifiedImageError, truncated data), SyntaxError or ValueError.
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"Cannot decode image {path}: {err}") from err
    return array.reshape(height, width, channels)


def _image_shape(path: str) -> tuple[int, int, int]:
    try:
        with Image.open(path) as image:
            width, height = image.size
            return height, width, 1 if image.mode in _GRAYSCALE_MODES else 3
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"Cannot decode image {path}: {err}") from err


# Hidden entries (.ipynb_checkpoints, macOS ._*.png resource forks) are tool debris, not classes or images.
def _subdirectories(directory: Path) -> list[Path]:
    return [entry for entry in directory.iterdir() if entry.is_dir() and not entry.name.startswith(".")]


def _image_names(directory: Path) -> list[str]:
    return sorted(
        name for name in os.listdir(directory) if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")
    )


def _scan(root: Path, missing_hint: str) -> FolderIndex:
    layout = LAYOUT.format(root=root)
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder {root} does not exist. Expected the layout {layout}.{missing_hint}")
    missing = [split for split in REQUIRED_SPLITS if not (root / split).is_dir()]
    if missing:
        present = sorted(entry.name for entry in root.iterdir() if entry.is_dir())
        raise FileNotFoundError(
            f"Image folder {root} has no {' or '.join(missing)} directory (found: {present or 'nothing'}). "
            f"Expected the layout {layout}.{missing_hint}"
        )
    splits = [*REQUIRED_SPLITS, *(split for split in OPTIONAL_SPLITS if (root / split).is_dir())]
    class_names = tuple(sorted(entry.name for entry in _subdirectories(root / "train")))
    if not class_names:
        raise ValueError(f"{root / 'train'} has no class sub-directories. Expected the layout {layout}.")
    label_of = {name: label for label, name in enumerate(class_names)}
    files = {}
    for split in splits:
        paths, labels = [], []
        for class_dir in sorted(_subdirectories(root / split)):
            if class_dir.name not in label_of:
                raise ValueError(f"{class_dir} is a class that {root / 'train'} does not have ({list(class_names)}).")
            images = _image_names(class_dir)
            if split == "train" and not images:
                raise ValueError(f"{class_dir} holds no {'/'.join(IMAGE_EXTENSIONS)} images.")
            paths += [str(class_dir / name) for name in images]
            labels += [label_of[class_dir.name]] * len(images)
        order = np.random.default_rng(ORDER_SEED).permutation(len(paths))
        files[split] = (tuple(paths[i] for i in order), np.asarray(labels, np.int32)[order])
    return FolderIndex(class_names, files)


@functools.lru_cache(maxsize=16)
def _mean_std(paths: tuple[str, ...], shape: tuple[int, int, int]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    def sums(path: str) -> tuple[np.ndarray, np.ndarray]:
        pixels = read_image(path, *shape).reshape(-1, shape[2]).astype(np.float64) / 255.0
        return pixels.sum(axis=0), np.square(pixels).sum(axis=0)

    # PIL releases the GIL while decoding, so threads help.
    with ThreadPoolExecutor() as pool:
        totals, squares = (np.sum(parts, axis=0) for parts in zip(*pool.map(sums, paths)))
    count = len(paths) * shape[0] * shape[1]
    mean = totals / count
    std = np.sqrt(np.maximum(squares / count - np.square(mean), 0.0))
    # Four decimals, like published constants: more would be noise from the sample.
    return tuple(round(float(m), 4) for m in mean), tuple(round(float(s), 4) for s in std)


class ImageFolderSource:
    """A dataset read from an image-folder tree; images are resized to the size of the first (sorted) training image.

    Class names are the sorted sub-directories of ``train``. Mean/std are ``mean``/``std`` if given, else
    computed from at most `STATS_SAMPLE` training images. Augmentation: zero padding of 1/8 of the shorter side
    (4 pixels at 32x32), random crop, horizontal flip.

    Args:
        name: registry name, e.g. ``"cinic10"`` or ``"folder:/data/pets"``.
        root: directory holding ``train``, ``test`` and optionally ``valid``.
        mean: per-channel mean of images scaled to [0, 1], or None to compute it.
        std: per-channel standard deviation, or None to compute it.
        missing_hint: added to the error raised when the tree is missing (e.g. where to download it).

    Raises:
        FileNotFoundError: the tree or one of its required splits is missing.
        ValueError: the tree has no classes, an empty training class or an undecodable image.
    """

    def __init__(
        self,
        name: str,
        root: Path,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        missing_hint: str = "",
    ):
        self.name = name
        self.root = Path(root)
        self.index = _scan(self.root, missing_hint)
        train_paths = self.index.files["train"][0]
        self.image_shape = _image_shape(min(train_paths))
        if mean is None or std is None:
            mean, std = _mean_std(train_paths[:STATS_SAMPLE], self.image_shape)
        self.mean, self.std = tuple(mean), tuple(std)
        self.augmentation = Augmentation(pad=max(1, min(self.image_shape[:2]) // 8), pad_mode="CONSTANT", flip=True)

    def info(self) -> DatasetInfo:
        return DatasetInfo(
            name=self.name,
            num_classes=len(self.index.class_names),
            class_names=self.index.class_names,
            image_shape=self.image_shape,
            mean=self.mean,
            std=self.std,
            splits={split: len(paths) for split, (paths, _) in self.index.files.items()},
        )

    def raw(self, split: str, limit: int | None) -> tf.data.Dataset:
        paths, labels = self.index.files[split]
        shape = self.image_shape

        def decode(path: bytes) -> np.ndarray:
            return read_image(path.decode(), *shape)

        def load(path: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            # A numpy_function so that a broken file fails with read_image's message, which names it.
            image = tf.numpy_function(decode, [path], tf.uint8, stateful=False)
            return tf.ensure_shape(image, shape), label

        # An explicit dtype keeps an empty split a dataset of strings.
        path_tensor = tf.convert_to_tensor(list(paths[:limit]), dtype=tf.string)
        dataset = tf.data.Dataset.from_tensor_slices((path_tensor, labels[:limit]))
        return dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def cinic10_source(data_dir: Path) -> ImageFolderSource:
    """CINIC-10 extracted to ``<data_dir>/cinic10``, with its published mean/std.

    Args:
        data_dir: the package's data directory.
    """
    root = Path(data_dir) / "cinic10"
    hint = f" Download CINIC-10 from {CINIC10_URL} and extract it to {root}."
    return ImageFolderSource("cinic10", root, CINIC10_MEAN, CINIC10_STD, missing_hint=hint)
