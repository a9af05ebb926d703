"""CIFAR-10 and CIFAR-100 through tensorflow-datasets, prepared offline from the official binary archive."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from mfef_keras.data.info import DatasetInfo
from mfef_keras.data.source import Augmentation


@dataclass(frozen=True)
class Archive:
    """The official binary archive tensorflow-datasets prepares a CIFAR dataset from.

    Args:
        filename: name tensorflow-datasets looks for in its manual directory.
        url: where to download it from.
        size: size in bytes.
        sha256: hex digest tensorflow-datasets checks it against.
    """

    filename: str
    url: str
    size: int
    sha256: str


# Copied from tensorflow_datasets/url_checksums/cifar10.txt and cifar100.txt (tests check they agree).
ARCHIVES = {
    "cifar10": Archive(
        "cifar-10-binary.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        170_052_171,
        "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
    ),
    "cifar100": Archive(
        "cifar-100-binary.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
        168_513_733,
        "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec",
    ),
}

# The archives' batches.meta.txt / fine_label_names.txt, in label order. tensorflow-datasets only learns the
# names while preparing, so these give the same `DatasetInfo` before the data is there.
CLASS_NAMES = {
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    "cifar100": tuple(
        """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel
        can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur
        dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion
        lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree
        pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea
        seal shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank
        telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman
        worm""".split()
    ),
}

# The FFL recipe (spec section 4).
MEAN = {"cifar10": (0.4914, 0.4822, 0.4465), "cifar100": (129.3 / 255, 124.1 / 255, 112.4 / 255)}
STD = {"cifar10": (0.2023, 0.1994, 0.2010), "cifar100": (68.2 / 255, 65.4 / 255, 70.4 / 255)}
AUGMENTATION = {
    "cifar10": Augmentation(pad=4, pad_mode="CONSTANT", flip=True),
    "cifar100": Augmentation(pad=4, pad_mode="REFLECT", flip=True),
}
SPLITS = {"train": 50_000, "test": 10_000}


class CifarSource:
    """CIFAR-10 or CIFAR-100 stored by tensorflow-datasets under ``data_dir``.

    The data is used if prepared; otherwise it is prepared from the official archive placed in
    ``<data_dir>/downloads/manual/``; otherwise `raw` fails at once, saying which file to place where.
    Nothing is ever downloaded: without network tensorflow-datasets would retry for minutes.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        data_dir: tensorflow-datasets data directory.
    """

    def __init__(self, name: str, data_dir: Path):
        self.name = name
        self.data_dir = Path(data_dir)
        self.augmentation = AUGMENTATION[name]

    @property
    def manual_dir(self) -> Path:
        return self.data_dir / "downloads" / "manual"

    def info(self) -> DatasetInfo:
        builder = self._builder()
        names = tuple(builder.info.features["label"].names)
        # Before preparation the builder only knows the class count and names them "0", "1", ...
        if names == tuple(str(i) for i in range(len(names))):
            names = CLASS_NAMES[self.name]
        return DatasetInfo(
            name=self.name,
            num_classes=len(names),
            class_names=names,
            image_shape=(32, 32, 3),
            mean=MEAN[self.name],
            std=STD[self.name],
            splits=dict(SPLITS),
        )

    def raw(self, split: str, indices: np.ndarray | None) -> tf.data.Dataset:
        dataset = self._prepared().as_dataset(split=split, as_supervised=True, shuffle_files=False)
        dataset = dataset.map(lambda image, label: (image, tf.cast(label, tf.int32)))
        if indices is None:
            return dataset
        # tfds reads records in order and cannot seek: keep the wanted ones, and stop after the last.
        wanted = np.zeros(SPLITS[split], bool)
        wanted[indices] = True
        wanted = tf.constant(wanted)
        kept = dataset.enumerate().filter(lambda i, example: wanted[i]).map(lambda i, example: example)
        return kept.take(len(indices))

    def raw_arrays(self, split: str, indices: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        images = [np.zeros((0, 32, 32, 3), np.uint8)]
        labels = [np.zeros((0,), np.int32)]
        for image_batch, label_batch in self.raw(split, indices).batch(1024).as_numpy_iterator():
            images.append(image_batch)
            labels.append(label_batch)
        return np.concatenate(images), np.concatenate(labels)

    def labels(self, split: str) -> np.ndarray:
        self._prepared()
        return _labels(self.name, str(self.data_dir), split)

    def _prepared(self):
        builder = self._builder()
        if not builder.is_prepared():
            self._prepare(builder)
        return builder

    def _builder(self):
        import tensorflow_datasets as tfds  # imported on use: it is slow to import and only CIFAR needs it

        return tfds.builder(self.name, data_dir=str(self.data_dir))

    def _prepare(self, builder) -> None:
        import tensorflow_datasets as tfds
        from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

        archive = ARCHIVES[self.name]
        path = self.manual_dir / archive.filename
        if not path.is_file():
            raise FileNotFoundError(
                f"{self.name} is not prepared in {self.data_dir} and {path} does not exist. Download "
                f"{archive.url} ({archive.size:,} bytes, sha256 {archive.sha256}) and place it at {path}; it "
                "is prepared from there on first use (nothing is downloaded automatically). To use another data "
                "directory, set $MFEF_DATA_DIR or pass --data-dir (data_dir= in Python)."
            )
        config = tfds.download.DownloadConfig(manual_dir=str(self.manual_dir), try_download_gcs=False)
        try:
            builder.download_and_prepare(download_dir=str(self.data_dir / "downloads"), download_config=config)
        except NonMatchingChecksumError as err:
            raise ValueError(
                f"{path} is not the official {archive.filename}: expected {archive.size:,} bytes with sha256 "
                f"{archive.sha256}, found {path.stat().st_size:,} bytes. Replace it with a complete download "
                f"of {archive.url}."
            ) from err


@functools.cache
def _labels(name: str, data_dir: str, split: str) -> np.ndarray:
    """The labels of a prepared split, read once per process and without decoding the images."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    dataset = builder.as_dataset(split=split, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()}).map(
        lambda example: example["label"]
    )
    return np.fromiter(dataset.as_numpy_iterator(), np.int32)
