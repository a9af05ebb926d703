"""Image-folder datasets: ``ROOT/{train,test[,valid]}/<class>/*.{png,jpg,jpeg}``, CINIC-10 among them."""

from __future__ import annotations

import functools
import os
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from mfef_keras.data.image_files import MAX_IMAGE_PIXELS, ImageFileError, load_image
from mfef_keras.data.info import DatasetInfo
from mfef_keras.data.source import Augmentation
from mfef_keras.data.validation_split import SHIPPED_SPLIT

if TYPE_CHECKING:
    import tensorflow as tf

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
REQUIRED_SPLITS = ("train", "test")
OPTIONAL_SPLITS = (SHIPPED_SPLIT,)
LAYOUT = "{root}/{{train,test[,valid]}}/<class>/*.{{png,jpg,jpeg}}"
# Mean/std of a generic folder come from this many training images (a random sample, see `_scan`).
STATS_SAMPLE = 2000
ORDER_SEED = 0
# Published with CINIC-10 (Darlow et al., 2018).
CINIC10_MEAN = (0.47889522, 0.47227842, 0.43047404)
CINIC10_STD = (0.24205776, 0.23828046, 0.25874835)
CINIC10_URL = "https://datashare.ed.ac.uk/handle/10283/3192"
# Modes of `load_image`'s result that hold one colour channel (16-bit grayscale comes back as "L").
_GRAYSCALE_MODES = frozenset({"1", "L", "LA"})
# Every file is decoded once before training; the error lists this many bad files and counts the rest.
MAX_LISTED_BAD_FILES = 20
# Below this many files the check takes about a second: no progress bar.
PROGRESS_MIN_FILES = 500
# Files per task of the check's thread pool: a 32x32 PNG decodes in about as long as one task costs to schedule.
_CHECK_CHUNK = 64


@dataclass(frozen=True)
class FolderIndex:
    """The files of an image folder.

    Args:
        class_names: sorted class sub-directory names of the train split; labels index this tuple.
        files: split name -> (image paths, int32 labels), in a fixed-seed random order so that any prefix
            (what ``limit`` takes) is a fair sample of all classes.
    """

    class_names: tuple[str, ...]
    files: dict[str, tuple[tuple[str, ...], np.ndarray]]


def read_image(path: str, height: int, width: int, channels: int) -> np.ndarray:
    """Decode one image file to uint8 ``(height, width, channels)``, resizing (bilinear) if needed.

    Args:
        path: image file.
        height: output height.
        width: output width.
        channels: 1 (grayscale) or 3 (RGB); other modes are converted, 16-bit grayscale scaled to 8 bits.

    Raises:
        ImageFileError: a ValueError naming ``path`` when the file is not a regular file, too large or
            cannot be decoded (see `load_image`).
    """
    image = load_image(path).convert("L" if channels == 1 else "RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8).reshape(height, width, channels)


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
    # One class would train to a meaningless 100 % accuracy.
    if len(class_names) < 2:
        raise ValueError(
            f"{root / 'train'} has {len(class_names)} class sub-director{'y' if class_names else 'ies'} "
            f"{list(class_names)}; a classifier needs at least 2. Expected the layout {layout}."
        )
    for split in splits[1:]:
        found = {entry.name for entry in _subdirectories(root / split)}
        lacking, extra = sorted(set(class_names) - found), sorted(found - set(class_names))
        if lacking or extra:
            differences = [f"lacks {lacking}"] * bool(lacking) + [f"has {extra}, which train does not"] * bool(extra)
            raise ValueError(
                f"The classes of {root / split} differ from those of {root / 'train'}: it {' and '.join(differences)}. "
                f"Every split needs the same class sub-directories: {list(class_names)}."
            )
    listings = {(split, name): _image_names(root / split / name) for split in splits for name in class_names}
    empty = [str(root / split / name) for (split, name), images in listings.items() if not images]
    if empty:
        raise ValueError(f"{', '.join(empty)} hold(s) no {'/'.join(IMAGE_EXTENSIONS)} images.")
    files = {}
    for split in splits:
        paths, labels = [], []
        for label, name in enumerate(class_names):
            images = listings[split, name]
            paths += [str(root / split / name / image) for image in images]
            labels += [label] * len(images)
        order = np.random.default_rng(ORDER_SEED).permutation(len(paths))
        files[split] = (tuple(paths[i] for i in order), np.asarray(labels, np.int32)[order])
    return FolderIndex(class_names, files)


def _file_signature(path: str) -> tuple[str, int, int]:
    # Size and modification time: a file replaced since the last check is checked again.
    try:
        status = os.stat(path)
    except OSError:
        return path, -1, -1
    return path, status.st_size, status.st_mtime_ns


def _image_facts(paths: tuple[str, ...]) -> list[tuple[int, int, bool] | str]:
    facts = []
    for path in paths:
        try:
            image = load_image(path)
        except ImageFileError as err:
            facts.append(str(err))
        else:
            facts.append((image.height, image.width, image.mode in _GRAYSCALE_MODES))
    return facts


def _check_files(root: Path, paths: list[str]) -> list[tuple[int, int, bool]]:
    """``(height, width, grayscale)`` of each file, after decoding every one of them.

    Raises:
        ValueError: naming every file that cannot be used (up to `MAX_LISTED_BAD_FILES`) and why.
    """
    from tqdm.auto import tqdm

    chunks = [tuple(paths[i : i + _CHECK_CHUNK]) for i in range(0, len(paths), _CHECK_CHUNK)]
    facts = []
    quiet = len(paths) <= PROGRESS_MIN_FILES
    bar = tqdm(total=len(paths), desc=f"Checking {root}", unit="image", file=sys.stderr, disable=quiet)
    # PIL releases the GIL while decoding, so threads help; few of them, as each may hold a large image.
    with bar, ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for chunk, chunk_facts in zip(chunks, pool.map(_image_facts, chunks)):
            facts += chunk_facts
            bar.update(len(chunk))
    bad = [fact for fact in facts if isinstance(fact, str)]
    if bad:
        listed = "\n  ".join(bad[:MAX_LISTED_BAD_FILES])
        rest = f"\n  ... and {len(bad) - MAX_LISTED_BAD_FILES} more." if len(bad) > MAX_LISTED_BAD_FILES else ""
        raise ValueError(
            f"{len(bad)} of the {len(paths)} image files under {root} cannot be used:\n  {listed}{rest}\n"
            f"Remove or replace them: images must be regular PNG/JPEG files of at most {MAX_IMAGE_PIXELS:,} pixels."
        )
    return facts


# Cached on the files' sizes and modification times: every epoch builds its dataset again, and a file
# replaced in between is checked again.
@functools.lru_cache(maxsize=16)
def _input_shape(root: Path, signature: tuple[tuple[str, int, int], ...], train_count: int) -> tuple[int, int, int]:
    """Checks every file, then picks the input shape and notes (on stderr) how many images are resized.

    The size is the most common (height, width) among the ``train_count`` training images (the first ones of
    ``signature``), the smallest of equally common ones since it costs the least memory; 3 channels unless every
    training image is grayscale.
    """
    facts = _check_files(root, [path for path, _, _ in signature])
    counts = Counter((height, width) for height, width, _ in facts[:train_count])
    most = max(counts.values())
    height, width = min((size for size, count in counts.items() if count == most), key=lambda s: (s[0] * s[1], s))
    channels = 1 if all(gray for _, _, gray in facts[:train_count]) else 3
    resized = sum((h, w) != (height, width) for h, w, _ in facts)
    if resized:
        images = "1 image of another size is" if resized == 1 else f"{resized} images of other sizes are"
        print(
            f"note: {images} resized to {height}x{width}, the most common size of the {train_count} training images "
            f"under {root}.",
            file=sys.stderr,
        )
    return height, width, channels


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
    """A dataset read from an image-folder tree, every file of it checked (decoded) before any training.

    Class names are the sorted sub-directories of ``train``; every split must have the same ones, at least 2.
    Images take the most common size among the training images (the smallest of equally common sizes); the others
    are resized to it (bilinear), which is noted on stderr. They have 3 channels unless every training image is
    grayscale. 16-bit grayscale PNGs are scaled to 8 bits. Mean/std are ``mean``/``std`` if given, else computed
    from at most `STATS_SAMPLE` training images. Augmentation: zero padding of 1/8 of the shorter side (4 pixels
    at 32x32), random crop, horizontal flip.

    Args:
        name: registry name, e.g. ``"cinic10"`` or ``"folder:/data/pets"``.
        root: directory holding ``train``, ``test`` and optionally ``valid``.
        mean: per-channel mean of images scaled to [0, 1], or None to compute it.
        std: per-channel standard deviation, or None to compute it.
        missing_hint: added to the error raised when the tree is missing (e.g. where to download it).

    Raises:
        FileNotFoundError: the tree or one of its required splits is missing.
        ValueError: fewer than 2 classes, splits with different classes, a class without images, or files that
            are not regular, too large (see `MAX_IMAGE_PIXELS`) or undecodable (all of them named in one error).
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
        every_file = [path for paths, _ in self.index.files.values() for path in paths]
        self.image_shape = _input_shape(self.root, tuple(map(_file_signature, every_file)), len(train_paths))
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

    def raw(self, split: str, indices: np.ndarray | None) -> tf.data.Dataset:
        import tensorflow as tf  # on use: the numpy pipeline reads `raw_arrays` without TensorFlow

        paths, labels = self._files(split, indices)
        shape = self.image_shape

        def decode(path: bytes) -> np.ndarray:
            return read_image(path.decode(), *shape)

        def load(path: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            # A numpy_function so that a broken file fails with read_image's message, which names it.
            image = tf.numpy_function(decode, [path], tf.uint8, stateful=False)
            return tf.ensure_shape(image, shape), label

        # An explicit dtype keeps an empty split a dataset of strings.
        path_tensor = tf.convert_to_tensor(list(paths), dtype=tf.string)
        dataset = tf.data.Dataset.from_tensor_slices((path_tensor, labels))
        return dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def raw_arrays(self, split: str, indices: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Every image of the split decoded into memory (see `decode_all`), with its labels."""
        paths, labels = self._files(split, indices)
        return decode_all(tuple(map(_file_signature, paths)), self.image_shape), labels

    def labels(self, split: str) -> np.ndarray:
        return self.index.files[split][1]

    def _files(self, split: str, indices: np.ndarray | None) -> tuple[tuple[str, ...], np.ndarray]:
        paths, labels = self.index.files[split]
        if indices is None:
            return paths, labels
        return tuple(paths[i] for i in indices), labels[indices]


# Train, validation and test of one run: the numpy pipeline builds a dataset per epoch, and decoding a
# CINIC-10 split again each time would take longer than many an epoch. Keyed on the files' sizes and
# modification times, so a file replaced in between is decoded again.
@functools.lru_cache(maxsize=3)
def decode_all(signatures: tuple[tuple[str, int, int], ...], shape: tuple[int, int, int]) -> np.ndarray:
    """The images of ``signatures`` as one read-only uint8 array ``(len(signatures), *shape)``, decoded by threads.

    Args:
        signatures: ``(path, size, mtime_ns)`` of each image file (see `_file_signature`).
        shape: ``(height, width, channels)`` to decode to (see `read_image`).

    Raises:
        ImageFileError: naming a file that can no longer be decoded.
    """
    images = np.empty((len(signatures), *shape), np.uint8)

    def decode(index: int) -> None:
        images[index] = read_image(signatures[index][0], *shape)

    # PIL releases the GIL while decoding, so threads help; `list` re-raises the first failure.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(decode, range(len(signatures))))
    images.flags.writeable = False
    return images


def cinic10_source(data_dir: Path) -> ImageFolderSource:
    """CINIC-10 extracted to ``<data_dir>/cinic10``, with its published mean/std.

    Args:
        data_dir: the package's data directory.
    """
    root = Path(data_dir) / "cinic10"
    hint = f" Download CINIC-10 from {CINIC10_URL} and extract it to {root}."
    return ImageFolderSource("cinic10", root, CINIC10_MEAN, CINIC10_STD, missing_hint=hint)
