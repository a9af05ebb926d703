"""Datasets by name: their `DatasetInfo`, their raw arrays and their training/evaluation pipelines."""

from __future__ import annotations

import dataclasses
import numbers
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mfef_keras._names import unknown_name_error
from mfef_keras._tensorflow import tensorflow_installed, tensorflow_missing
from mfef_keras.choices import DATASETS
from mfef_keras.data import validation_split
from mfef_keras.data.info import DatasetInfo

if TYPE_CHECKING:
    import tensorflow as tf

    from mfef_keras.data.numpy_pipeline import NumpyBatches
    from mfef_keras.data.source import DatasetSource

FOLDER_PREFIX = "folder:"


def default_data_dir() -> Path:
    """Where datasets live unless ``data_dir`` is given: ``$MFEF_DATA_DIR``, else ``~/.mfef/data``."""
    return Path(os.environ.get("MFEF_DATA_DIR") or "~/.mfef/data").expanduser()


def list_datasets() -> list[str]:
    """Registered dataset names, in natural order; any ``"folder:PATH"`` (an image-folder tree) is accepted too."""
    return DATASETS.list()


def _check_data_dir(root: Path, named: bool) -> None:
    """Refuse a data directory that is a file, or that the user named and that does not exist.

    Raises:
        ValueError: ``root`` is a file.
        FileNotFoundError: ``named`` and ``root`` does not exist.
    """
    given = "--data-dir (data_dir)" if named else "$MFEF_DATA_DIR (or ~/.mfef/data)"
    if root.exists() and not root.is_dir():
        raise ValueError(
            f"Data directory {root} is a file; {given} must be the folder that holds the datasets "
            f"(<data dir>/fashion-mnist/, <data dir>/cinic10/, CIFAR's <data dir>/downloads/manual/)."
        )
    if named and not root.exists():
        raise FileNotFoundError(
            f"Data directory {root} does not exist; {given} must be an existing folder that holds the datasets "
            f"(<data dir>/fashion-mnist/, <data dir>/cinic10/, CIFAR's <data dir>/downloads/manual/)."
        )


def _source(name: str, data_dir: str | os.PathLike | None) -> DatasetSource:
    """The source of dataset ``name``: a registered one (`mfef_keras.choices.DATASETS`) or ``folder:PATH``.

    Raises:
        ValueError: unknown dataset.
        TensorFlowMissing: CIFAR where TensorFlow is not installed.
    """
    if name.startswith(FOLDER_PREFIX) and name[len(FOLDER_PREFIX) :]:
        from mfef_keras.data.image_folder import ImageFolderSource

        return ImageFolderSource(name, Path(name[len(FOLDER_PREFIX) :]).expanduser())
    if name not in DATASETS:
        raise unknown_name_error("dataset", name, [*DATASETS, f"{FOLDER_PREFIX}PATH"])
    entry = DATASETS.get(name)
    named = data_dir is not None
    root = Path(data_dir).expanduser() if named else default_data_dir()
    if entry.reads_data_dir:
        _check_data_dir(root, named)
    if entry.needs_tensorflow and not tensorflow_installed():
        others = [dataset for dataset in DATASETS.list() if not DATASETS.get(dataset).needs_tensorflow]
        raise tensorflow_missing(
            f"Dataset {name!r} is read through tensorflow-datasets, which needs TensorFlow",
            f"train on a dataset that needs neither: {', '.join(others)} or {FOLDER_PREFIX}PATH",
        )
    return entry.open(root, named)


def _positive_int(value: object, what: str) -> int:
    # numbers.Integral admits numpy integers; bool is excluded because True would silently mean 1.
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}.")
    return int(value)


def _public(info: DatasetInfo) -> DatasetInfo:
    # The source's own splits become train / val / test (see `validation_split`).
    return dataclasses.replace(info, splits=validation_split.public_splits(info.name, info.splits))


def _locate(
    source: DatasetSource, name: str, split: str, limit: int | None
) -> tuple[DatasetInfo, str, np.ndarray | None]:
    """The `DatasetInfo`, and where public split ``split`` (its first ``limit`` examples if given) lies in the source.

    Returns:
        ``(info, source split, indices)`` as `DatasetSource.raw` takes them.
    """
    source_info = source.info()
    info = _public(source_info)
    if split not in info.splits:
        raise unknown_name_error(f"{name} split", split, info.splits)
    source_split, indices = validation_split.locate(
        info.name, split, source_info.splits, lambda: source.labels("train")
    )
    if limit is not None and limit < info.splits[split]:
        indices = (np.arange(info.splits[split]) if indices is None else indices)[:limit]
    return info, source_split, indices


def dataset_info(name: str, data_dir: str | os.PathLike | None = None) -> DatasetInfo:
    """The `DatasetInfo` (classes, image shape, normalisation, split sizes) of dataset ``name``.

    ``splits`` has ``train``, ``val`` and ``test`` (see `mfef_keras.data.validation_split`: ``train`` is what
    the validation hold-out leaves). CIFAR's is known without the data; image folders are scanned (and, for
    ``folder:PATH``, a sample of training images decoded for the mean/std); Fashion-MNIST's files are read and
    hash-checked (once per process, about half a second).

    Args:
        name: one of `list_datasets` or ``"folder:PATH"``.
        data_dir: data directory; defaults to `default_data_dir`.

    Raises:
        ValueError: unknown dataset (the message lists the known ones and the closest match).
        FileNotFoundError: an image-folder dataset whose tree is missing, or Fashion-MNIST's files.
        TensorFlowMissing: CIFAR without TensorFlow.
    """
    return _public(_source(name, data_dir).info())


def make_dataset(
    name: str,
    split: str,
    batch_size: int,
    *,
    training: bool,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    cache: bool = True,
    reshuffle_each_iteration: bool = True,
) -> tf.data.Dataset | NumpyBatches:
    """Batches of ``(float32 normalised NHWC images, int32 labels)`` from a split of dataset ``name``.

    A `tf.data.Dataset` where TensorFlow is installed, else a `keras.utils.PyDataset` of numpy batches (see
    `mfef_keras.data.pipeline_choice`); `keras.Model.fit` takes either on every backend.

    Normalisation is ``(x / 255 - mean) / std`` with the `DatasetInfo`'s constants, the formula of
    `mfef_keras.layers.ImageNormalization`. With ``training=True`` the examples are shuffled (afresh each
    epoch) and augmented (pad, random crop, flip where the dataset allows it); the same ``seed`` gives the
    same batches. The last partial batch is kept.

    ``"folder:PATH"`` reads ``PATH/{train,test[,valid]}/<class>/*.{png,jpg,jpeg}``; CINIC-10 is such a tree
    at ``<data_dir>/cinic10``. CIFAR is prepared by tensorflow-datasets in ``data_dir`` from the official
    archive placed in ``<data_dir>/downloads/manual/``; nothing is downloaded. Fashion-MNIST is read from its
    four official IDX files in ``<data_dir>/fashion-mnist/``, else from Debian's dataset-fashion-mnist
    package (``/usr/share/datasets/fashion-mnist``).

    Args:
        name: one of `list_datasets` or ``"folder:PATH"``.
        split: ``"train"``, ``"val"`` or ``"test"``. ``"val"`` is the fixed, stratified hold-out of the
            training split that runs select models on (CINIC-10's and a folder's own ``valid`` where it exists);
            ``"train"`` is the rest (see `mfef_keras.data.validation_split`).
        batch_size: examples per batch.
        training: shuffle and augment.
        seed: seed of the shuffle order and of the augmentation.
        data_dir: data directory; defaults to `default_data_dir`.
        limit: use only the first ``limit`` examples of the split (a fixed random sample); for ``"train"``,
            of what the validation hold-out leaves.
        cache: keep decoded images in memory after the first epoch, when they fit (tf.data; the numpy
            pipeline always holds a split's images in memory).
        reshuffle_each_iteration: draw a new order and new augmentation each time the dataset is
            iterated. Turn it off when you build one pipeline per epoch (with a per-epoch seed): the
            batches then depend only on the seed, not on how many iterators a strategy creates.

    Raises:
        ValueError: unknown dataset or split, or bad ``batch_size``/``limit``.
        FileNotFoundError: the data is missing (the message says what to put where).
        TensorFlowMissing: CIFAR without TensorFlow.
    """
    from mfef_keras.data.pipeline_choice import TF_DATA, input_pipeline

    batch_size = _positive_int(batch_size, "batch_size")
    limit = None if limit is None else _positive_int(limit, "limit")
    pipeline = input_pipeline()
    source = _source(name, data_dir)
    info, source_split, indices = _locate(source, name, split, limit)
    if pipeline != TF_DATA:
        from mfef_keras.data.numpy_pipeline import NumpyBatches

        images, labels = source.raw_arrays(source_split, indices)
        return NumpyBatches(
            images,
            labels,
            mean=info.mean,
            std=info.std,
            augmentation=source.augmentation,
            batch_size=batch_size,
            training=training,
            seed=seed,
            reshuffle_each_iteration=reshuffle_each_iteration,
        )
    from mfef_keras.data.pipeline import build_pipeline

    num_examples = info.splits[split] if limit is None else min(limit, info.splits[split])
    return build_pipeline(
        source.raw(source_split, indices),
        num_examples=num_examples,
        image_shape=info.image_shape,
        mean=info.mean,
        std=info.std,
        augmentation=source.augmentation,
        batch_size=batch_size,
        training=training,
        seed=seed,
        cache=cache,
        reshuffle_each_iteration=reshuffle_each_iteration,
    )


def load_arrays(
    name: str, split: str, data_dir: str | os.PathLike | None = None, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The raw images (uint8 NHWC, 0..255) and int32 labels of a split, in the order `make_dataset` reads them.

    For calibration, export checks and evaluation outside the pipeline; feed the images to a model that
    starts with `mfef_keras.layers.ImageNormalization`, or normalise them with the `DatasetInfo`'s constants.

    Args:
        name: one of `list_datasets` or ``"folder:PATH"``.
        split: ``"train"``, ``"val"`` or ``"test"`` (see `make_dataset`).
        data_dir: data directory; defaults to `default_data_dir`.
        limit: only the first ``limit`` examples.

    Raises:
        ValueError: unknown dataset or split, or bad ``limit``.
        FileNotFoundError: the data is missing.
        TensorFlowMissing: CIFAR without TensorFlow.
    """
    limit = None if limit is None else _positive_int(limit, "limit")
    source = _source(name, data_dir)
    _, source_split, indices = _locate(source, name, split, limit)
    return source.raw_arrays(source_split, indices)
