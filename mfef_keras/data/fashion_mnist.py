"""Fashion-MNIST (Xiao et al., 2017) from its four official IDX files: Debian's package or a copy in the data dir."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mfef_keras.data.idx_files import read_idx_gz
from mfef_keras.data.info import DatasetInfo
from mfef_keras.data.source import Augmentation

if TYPE_CHECKING:
    import tensorflow as tf

NAME = "fashion_mnist"
# Sub-directory of the data dir, and the directory `apt-get install dataset-fashion-mnist` fills.
SUBDIR = "fashion-mnist"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL_COMMAND = "apt-get install dataset-fashion-mnist"
UPSTREAM_URL = "https://github.com/zalandoresearch/fashion-mnist"
# split -> (images file, labels file), the upstream names.
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# Of the decompressed files: Debian's .gz headers differ from upstream's, the content does not.
SHA256 = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IMAGE_SHAPE = (28, 28, 1)
# Of the 60,000 training images scaled to [0, 1]; tests/test_fashion_mnist.py recomputes them.
MEAN = (0.2860,)
STD = (0.3530,)


class FashionMnistSource:
    """Fashion-MNIST at its native 28x28x1, read from ``<data_dir>/fashion-mnist/`` or else (unless the user named
    ``data_dir``) from `DEBIAN_DIR`.

    The upstream files are already in a random order, so any prefix of a split (what ``limit`` takes) is
    a fair sample of the classes. Augmentation: random crop after 2-pixel zero padding and a horizontal
    flip (garments are left-right symmetric).

    Args:
        data_dir: data directory; its ``fashion-mnist`` sub-directory is used when it holds any of the files.
        system_dir: where the Debian package puts the files (default `DEBIAN_DIR`).
        fallback: whether to read ``system_dir`` when ``data_dir`` lacks the files; False where the user named
            ``data_dir``, since reading another copy would hide their mistake.
        sha256: expected sha256 of each file's decompressed content, by file name (default `SHA256`, the
            official files'; tests give those of the files they generate).

    Raises:
        FileNotFoundError: the files are in neither place (the message gives the install command), or not in
            ``data_dir`` when ``fallback`` is False (the message names the missing files).
    """

    augmentation = Augmentation(pad=2, pad_mode="CONSTANT", flip=True)

    def __init__(
        self,
        data_dir: Path,
        system_dir: Path | None = None,
        sha256: Mapping[str, str] | None = None,
        fallback: bool = True,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.fallback = fallback
        # Module constants are read here, not bound as defaults, so tests can point them elsewhere.
        self.system_dir = Path(DEBIAN_DIR if system_dir is None else system_dir)
        self.sha256 = dict(SHA256 if sha256 is None else sha256)
        # Located now, so a missing dataset fails before anything is written.
        self.directory = self._locate()

    def info(self) -> DatasetInfo:
        """The dataset's description.

        The files are read and checked here (once per process, about half a second) for the split sizes, so
        that a corrupt file fails before training writes anything.
        """
        return DatasetInfo(
            name=NAME,
            num_classes=len(CLASS_NAMES),
            class_names=CLASS_NAMES,
            image_shape=IMAGE_SHAPE,
            mean=MEAN,
            std=STD,
            splits={split: len(self.arrays(split)[1]) for split in FILES},
        )

    def raw(self, split: str, indices: np.ndarray | None) -> tf.data.Dataset:
        import tensorflow as tf  # on use: `info` and the numpy pipeline need no TensorFlow

        return tf.data.Dataset.from_tensor_slices(self.raw_arrays(split, indices))

    def raw_arrays(self, split: str, indices: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        images, labels = self.arrays(split)
        if indices is None:
            return images, labels
        return images[indices], labels[indices]

    def labels(self, split: str) -> np.ndarray:
        return self.arrays(split)[1]

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Uint8 ``(N, 28, 28, 1)`` images and int32 labels of ``split``, checked (see `load_split`)."""
        images_name, labels_name = FILES[split]
        return load_split(
            _file_key(self.directory / images_name),
            _file_key(self.directory / labels_name),
            self.sha256[images_name],
            self.sha256[labels_name],
        )

    def _locate(self) -> Path:
        names = [name for pair in FILES.values() for name in pair]
        local = self.data_dir / SUBDIR
        for directory in (local, self.system_dir) if self.fallback else (local,):
            for name in names:
                path = directory / name
                if path.exists() and not path.is_file():
                    # A FIFO or directory would block or fail obscurely when opened.
                    raise ValueError(f"{path} is not a regular file.")
            present = [name for name in names if (directory / name).is_file()]
            if len(present) == len(names):
                return directory
            # A partial copy in the data dir is a mistake to report, not a reason to read other files.
            if present and directory == local:
                missing = ", ".join(name for name in names if name not in present)
                raise FileNotFoundError(
                    f"{local} holds only part of Fashion-MNIST: {missing} missing. Place all four official files "
                    f"there ({UPSTREAM_URL}), or remove the directory to use the Debian package's copy in "
                    f"{self.system_dir} ({INSTALL_COMMAND})."
                )
        if not self.fallback:
            missing = ", ".join(name for name in names if not (local / name).is_file())
            raise FileNotFoundError(
                f"Fashion-MNIST is not in the data directory given, {self.data_dir}: {local} lacks {missing}. "
                f"Place the four official files there ({UPSTREAM_URL}), or leave out --data-dir to read the default "
                f"data directory or Debian's copy in {self.system_dir} ({INSTALL_COMMAND})."
            )
        raise FileNotFoundError(
            f"Fashion-MNIST is neither in {local} nor in {self.system_dir}. Install Debian's package "
            f"({INSTALL_COMMAND}), or place the four official files {', '.join(names)} ({UPSTREAM_URL}) in "
            f"{local}/. Set $MFEF_DATA_DIR or pass --data-dir to use another data directory."
        )


# (path, inode, size, mtime_ns, ctime_ns): a file replaced or rewritten since it was checked is read and
# checked again.
FileKey = tuple[str, int, int, int, int]


def _file_key(path: Path) -> FileKey:
    stat = path.stat()
    return str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


@functools.cache
def load_split(
    images_file: FileKey, labels_file: FileKey, images_sha256: str, labels_sha256: str
) -> tuple[np.ndarray, np.ndarray]:
    """Read, hash-check and parse one split's two files; cached per process by path, inode, size and times.

    Reading the train split takes about half a second, nearly all of it gunzip; the sha256 of the 47 MB
    of images adds about 30 ms, so every process checks the files again rather than trusting a marker.

    Args:
        images_file: `FileKey` of the images file.
        labels_file: `FileKey` of the labels file.
        images_sha256: expected sha256 of the decompressed images file.
        labels_sha256: expected sha256 of the decompressed labels file.

    Returns:
        Read-only uint8 images ``(N, 28, 28, 1)`` and int32 labels ``(N,)``.

    Raises:
        ValueError: naming the file, when one is corrupt, fails its hash check or holds the wrong arrays.
    """
    images_path, labels_path = images_file[0], labels_file[0]
    images = read_idx_gz(images_path, images_sha256)
    labels = read_idx_gz(labels_path, labels_sha256)
    if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE[:2]:
        raise ValueError(
            f"{images_path} holds {images.dtype.name} images of shape {images.shape[1:]}, expected uint8 "
            f"{IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]}."
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(
            f"{labels_path} holds a {labels.dtype.name} array of shape {labels.shape}, expected uint8 (N,)."
        )
    if len(images) != len(labels):
        raise ValueError(f"{images_path} holds {len(images):,} images but {labels_path} {len(labels):,} labels.")
    if labels.size and labels.max() >= len(CLASS_NAMES):
        raise ValueError(f"{labels_path} holds label {labels.max()}; Fashion-MNIST has {len(CLASS_NAMES)} classes.")
    images = images.reshape(-1, *IMAGE_SHAPE)
    labels = labels.astype(np.int32)
    # Cached and shared between callers: nobody may change them in place.
    labels.flags.writeable = False
    return images, labels
