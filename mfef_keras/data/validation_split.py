"""The validation split: a fixed, stratified hold-out of the training split on which runs select models.

Every dataset offers the splits ``"train"``, ``"val"`` and ``"test"``. Datasets that ship a validation split
(CINIC-10, image folders with ``valid/``) serve it as ``"val"``. The others hold out, from their whole training
split, `holdout_size` images: 5,000 for CIFAR-10/100 and Fashion-MNIST, 10 % for the rest, and never more than
10 % of the training split (small copies, as tests generate, hold out 10 %). ``"train"`` is then what remains,
and ``train_limit`` takes its first examples from that remainder. The hold-out is stratified by class and drawn
with `HOLDOUT_SEED`, a constant: every run, seed and method sees the same validation images.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

VALIDATION_SPLIT = "val"
# The directory name of a shipped validation split (CINIC-10's, an image folder's).
SHIPPED_SPLIT = "valid"
HOLDOUT_SEED = 20_180_618
HOLDOUT_FRACTION = 0.1
# Held-out images of datasets whose papers hold out a fixed count; `holdout_size` caps them at 10 %.
HOLDOUT_COUNTS = {"cifar10": 5_000, "cifar100": 5_000, "fashion_mnist": 5_000}


def holdout_size(dataset: str, train_size: int) -> int:
    """How many of ``train_size`` training images dataset ``dataset`` holds out for validation.

    Args:
        dataset: registry name (``"cifar10"``, ``"digits"``, ``"folder:PATH"``...).
        train_size: images in the whole training split.

    Returns:
        ``min(count, round(10 % of train_size))`` with the dataset's fixed count, else 10 %; at least one image
        when there are two or more, so that selection never runs on an empty split.
    """
    tenth = round(HOLDOUT_FRACTION * train_size)
    size = min(HOLDOUT_COUNTS.get(dataset, tenth), tenth)
    return max(size, 1) if train_size > 1 else 0


def stratified_holdout(labels: np.ndarray, size: int, seed: int = HOLDOUT_SEED) -> np.ndarray:
    """Increasing indices of ``size`` examples, each class represented in proportion to its count.

    Per class, the quota is its share of ``size`` rounded down; the examples left over go to the classes with
    the largest remainders (ties to the smaller label). Within a class the examples are drawn at random.

    Args:
        labels: the int labels of the split to draw from.
        size: examples to draw (at most ``len(labels)``).
        seed: seed of the draw.
    """
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quotas = size * counts / max(len(labels), 1)
    taken = np.floor(quotas).astype(int)
    by_remainder = np.argsort(-(quotas - taken), kind="stable")
    taken[by_remainder[: size - taken.sum()]] += 1
    chosen = [rng.permutation(np.flatnonzero(labels == label))[:count] for label, count in zip(classes, taken)]
    return np.sort(np.concatenate([np.zeros(0, np.int64), *chosen]))


def public_splits(dataset: str, source_splits: Mapping[str, int]) -> dict[str, int]:
    """The sizes of ``"train"``, ``"val"`` and ``"test"``, from those of the source's own splits.

    Args:
        dataset: registry name.
        source_splits: the source's split sizes (``train``, ``test`` and maybe ``valid``).
    """
    if SHIPPED_SPLIT in source_splits:
        return {
            "train": source_splits["train"],
            VALIDATION_SPLIT: source_splits[SHIPPED_SPLIT],
            "test": source_splits["test"],
        }
    held = holdout_size(dataset, source_splits["train"])
    return {"train": source_splits["train"] - held, VALIDATION_SPLIT: held, "test": source_splits["test"]}


def locate(
    dataset: str, split: str, source_splits: Mapping[str, int], train_labels: Callable[[], np.ndarray]
) -> tuple[str, np.ndarray | None]:
    """Where public split ``split`` lies in the source: its source split and the increasing indices there.

    Args:
        dataset: registry name.
        split: ``"train"``, ``"val"`` or ``"test"``.
        source_splits: the source's split sizes.
        train_labels: returns the labels of the source's whole training split (called only when needed).

    Returns:
        ``(source split, indices)``; indices None means the whole source split.
    """
    if split == "test":
        return "test", None
    if SHIPPED_SPLIT in source_splits:
        return (SHIPPED_SPLIT if split == VALIDATION_SPLIT else "train"), None
    # Sized on the labels read, not on `source_splits`: CIFAR's sizes are constants, known before the data.
    labels = train_labels()
    held = stratified_holdout(labels, holdout_size(dataset, len(labels)))
    if split == VALIDATION_SPLIT:
        return "train", held
    return "train", np.setdiff1d(np.arange(len(labels)), held)
