"""The validation split: its size rule, its stratification, and that it is the same for every run."""

import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from mfef_keras.data import digits as digits_module
from mfef_keras.data import load_arrays, make_dataset
from mfef_keras.data.validation_split import holdout_size, locate, stratified_holdout


@pytest.mark.parametrize(
    ("dataset", "train_size", "held"),
    [
        ("fashion_mnist", 60_000, 5_000),
        ("cifar10", 50_000, 5_000),
        ("cifar100", 50_000, 5_000),
        ("digits", 1_437, 144),
        ("folder:/data/pets", 3_000, 300),
        # The fixed count is never more than 10 %: small copies hold out 10 %.
        ("fashion_mnist", 40, 4),
        ("cifar10", 10, 1),
        # At least one image, so that selection never runs on an empty split; none of a single image.
        ("folder:/x", 8, 1),
        ("folder:/x", 1, 0),
    ],
)
def test_holdout_size_rule(dataset, train_size, held):
    assert holdout_size(dataset, train_size) == held


def test_stratified_holdout_keeps_class_proportions_and_is_fixed():
    labels = np.repeat(np.arange(4), [500, 300, 150, 50])
    rng = np.random.default_rng(3)
    labels = labels[rng.permutation(len(labels))]
    held = stratified_holdout(labels, 100)
    assert len(held) == len(set(held.tolist())) == 100 and np.all(np.diff(held) > 0)
    assert Counter(labels[held].tolist()) == {0: 50, 1: 30, 2: 15, 3: 5}
    np.testing.assert_array_equal(held, stratified_holdout(labels, 100))
    assert not np.array_equal(held, stratified_holdout(labels, 100, seed=1))


def test_digits_validation_is_disjoint_from_train_and_covers_the_training_split():
    source_labels = digits_module._split_arrays()["train"][1]
    splits = {"train": len(source_labels), "test": 360}
    _, held = locate("digits", "val", splits, lambda: source_labels)
    _, kept = locate("digits", "train", splits, lambda: source_labels)
    assert not set(held.tolist()) & set(kept.tolist())
    assert sorted([*held.tolist(), *kept.tolist()]) == list(range(len(source_labels)))
    assert len(held) == 144
    # The arrays served are those rows of the training split, in their order; test is another source split.
    x_source = digits_module._split_arrays()["train"][0]
    np.testing.assert_array_equal(load_arrays("digits", "val")[0], x_source[held])
    np.testing.assert_array_equal(load_arrays("digits", "train")[0], x_source[kept])
    assert locate("digits", "test", splits, lambda: source_labels) == ("test", None)


def test_train_limit_applies_to_what_the_holdout_leaves():
    kept = load_arrays("digits", "train")[1]
    np.testing.assert_array_equal(load_arrays("digits", "train", limit=50)[1], kept[:50])
    held = load_arrays("digits", "val", limit=10_000)[1]
    assert len(held) == 144


def test_the_validation_split_does_not_depend_on_the_run_seed():
    def labels(seed: int) -> list[int]:
        return [int(y) for _, batch in make_dataset("digits", "val", 50, training=False, seed=seed) for y in batch]

    assert labels(0) == labels(7)


# Run here and in a fresh interpreter: the split must not depend on anything a process draws afresh.
_DIGEST = (
    "import hashlib; from mfef_keras.data import load_arrays; images, labels = load_arrays('digits', 'val'); "
    "print(hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest())"
)


def test_the_validation_split_is_the_same_in_another_process(capsys):
    exec(_DIGEST)
    here = capsys.readouterr().out.strip()
    done = subprocess.run([sys.executable, "-c", _DIGEST], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip().splitlines()[-1] == here
