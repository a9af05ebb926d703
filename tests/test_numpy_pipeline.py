"""The numpy input pipeline (training without TensorFlow): determinism, augmentation, batches, and the choice.

The tf.data comparisons run here, where TensorFlow is installed; `test_jax_only_install.py` trains in a
virtualenv that has none.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from mfef_keras._tensorflow import TensorFlowMissing
from mfef_keras.data import dataset_info, digits, load_arrays, make_dataset
from mfef_keras.data.numpy_pipeline import NumpyBatches, augment_batch
from mfef_keras.data.pipeline import normalise
from mfef_keras.data.pipeline_choice import PIPELINE_ENV, input_pipeline
from mfef_keras.data.source import Augmentation
from mfef_keras.normalization import normalize
from tests.helpers import subprocess_env

# The runner's seed of epoch ``epoch`` (mfef_keras.training.runner).
RUN_SEED = 3


def _epoch_seed(epoch: int) -> int:
    return RUN_SEED * 100_003 + epoch


@pytest.fixture
def numpy_pipeline(monkeypatch):
    monkeypatch.setenv(PIPELINE_ENV, "numpy")


@pytest.fixture
def without_tensorflow(monkeypatch):
    """`import tensorflow` fails and the package looks uninstalled, as in a virtualenv with the jax extra."""
    monkeypatch.delenv(PIPELINE_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "tensorflow", None)


def _train_batches(seed: int, **kwargs) -> list[tuple[np.ndarray, np.ndarray]]:
    dataset = make_dataset("digits", "train", 64, training=True, seed=seed, limit=200, **kwargs)
    return list(dataset)


def _digest(batches) -> str:
    hashed = hashlib.sha256()
    for images, labels in batches:
        hashed.update(images.tobytes() + labels.tobytes())
    return hashed.hexdigest()


# ------------------------------------------------------------------ batches


def test_batches_have_the_pipeline_shapes_dtypes_and_keep_the_partial_batch(numpy_pipeline):
    dataset = make_dataset("digits", "train", 16, training=True, seed=0, limit=50)
    assert isinstance(dataset, NumpyBatches)
    batches = list(dataset)
    assert [len(labels) for _, labels in batches] == [16, 16, 16, 2]
    for images, labels in batches:
        assert images.dtype == np.float32 and images.shape[1:] == (32, 32, 1)
        assert labels.dtype == np.int32 and labels.shape == (len(images),)
    # A training pass shows every example once, in a shuffled order.
    _, kept = load_arrays("digits", "train", limit=50)
    seen = np.concatenate([labels for _, labels in batches])
    assert sorted(seen.tolist()) == sorted(kept.tolist()) and not np.array_equal(seen, kept)


def test_a_batch_index_past_the_end_ends_iteration(numpy_pipeline):
    dataset = make_dataset("digits", "test", 100, training=False)
    with pytest.raises(IndexError, match="batch 4 out of range: there are 4"):
        dataset[4]


@pytest.mark.parametrize("split", ["val", "test"])
def test_evaluation_batches_equal_the_tf_data_pipeline_s_exactly(monkeypatch, split):
    monkeypatch.setenv(PIPELINE_ENV, "tf.data")
    expected = [(x.numpy(), y.numpy()) for x, y in make_dataset("digits", split, 64, training=False)]
    monkeypatch.setenv(PIPELINE_ENV, "numpy")
    served = list(make_dataset("digits", split, 64, training=False))
    assert len(served) == len(expected)
    for (images, labels), (tf_images, tf_labels) in zip(served, expected):
        assert images.dtype == tf_images.dtype and labels.dtype == tf_labels.dtype
        np.testing.assert_array_equal(images, tf_images)
        np.testing.assert_array_equal(labels, tf_labels)


def test_numpy_normalize_is_the_tf_data_formula_bit_for_bit():
    images = np.arange(256, dtype=np.uint8).reshape(4, 8, 8, 1).repeat(3, axis=-1)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    np.testing.assert_array_equal(normalize(images, mean, std), normalise(images, mean, std).numpy())


def test_digits_upscaling_is_tensorflow_s_bilinear_resize():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (3, 8, 8, 1)).astype(np.float32)
    for size in ((32, 32), (20, 12), (5, 3)):
        np.testing.assert_array_equal(
            digits.resize_bilinear(images, *size), tf.image.resize(images, size, method="bilinear").numpy()
        )


# ------------------------------------------------------------- determinism


def test_the_same_seed_gives_the_same_batches_and_epochs_differ(numpy_pipeline):
    first = _train_batches(_epoch_seed(0), reshuffle_each_iteration=False)
    assert _digest(first) == _digest(_train_batches(_epoch_seed(0), reshuffle_each_iteration=False))
    assert _digest(first) != _digest(_train_batches(_epoch_seed(1), reshuffle_each_iteration=False))


_CHILD = """
import hashlib, sys
from mfef_keras.data import make_dataset
hashed = hashlib.sha256()
for images, labels in make_dataset("digits", "train", 64, training=True, seed=int(sys.argv[1]), limit=200,
                                   reshuffle_each_iteration=False):
    hashed.update(images.tobytes() + labels.tobytes())
print(hashed.hexdigest())
"""


@pytest.mark.needs_jax
def test_batches_depend_on_the_seed_alone_not_on_the_process(numpy_pipeline):
    # Another process, another backend and no TensorFlow there: a resumed run sees the uninterrupted run's data.
    child = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['tensorflow'] = None\n" + _CHILD, str(_epoch_seed(1))],
        env=subprocess_env(KERAS_BACKEND="jax"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip() == _digest(_train_batches(_epoch_seed(1), reshuffle_each_iteration=False))


def test_each_pass_draws_anew_unless_reshuffling_is_off(numpy_pipeline):
    fixed = make_dataset("digits", "train", 64, training=True, seed=5, limit=200, reshuffle_each_iteration=False)
    assert _digest(fixed) == _digest(fixed)
    reshuffled = make_dataset("digits", "train", 64, training=True, seed=5, limit=200)
    first, second = _digest(reshuffled), _digest(reshuffled)
    assert first != second
    # Pass k is drawn from (seed, k): a fresh dataset repeats the same sequence of passes.
    again = make_dataset("digits", "train", 64, training=True, seed=5, limit=200)
    assert [_digest(again), _digest(again)] == [first, second]


def test_evaluation_batches_are_in_order_and_ignore_the_seed(numpy_pipeline):
    assert _digest(make_dataset("digits", "val", 50, training=False, seed=0)) == _digest(
        make_dataset("digits", "val", 50, training=False, seed=9)
    )


# ------------------------------------------------------------ augmentation

BLACK_PADDING = Augmentation(pad=2, pad_mode="CONSTANT", flip=True)


def test_black_padding_shows_at_the_border_a_crop_shifts_in():
    images = np.full((2, 6, 6, 1), 200, np.uint8)
    offsets = np.array([[0, 0], [4, 4]])
    out = augment_batch(images, offsets, np.zeros(2, bool), BLACK_PADDING)
    # Offset (0, 0) takes the padded image's top-left corner: two black rows on top and columns on the left.
    assert (out[0, :2] == 0).all() and (out[0, :, :2] == 0).all() and (out[0, 2:, 2:] == 200).all()
    assert (out[1, -2:] == 0).all() and (out[1, :, -2:] == 0).all() and (out[1, :-2, :-2] == 200).all()
    # Normalised, the black border is raw 0's value, not 0.
    mean, std = (0.3054,), (0.3237,)
    normalised = normalize(out, mean, std)
    np.testing.assert_array_equal(normalised[0, 0, 0], np.float32((0 - mean[0]) / std[0]))


def test_a_centred_crop_is_the_image_and_a_flip_mirrors_it():
    images = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3)).astype(np.uint8)
    centre = np.full((2, 2), 2)
    out = augment_batch(images, centre, np.array([False, True]), BLACK_PADDING)
    np.testing.assert_array_equal(out[0], images[0])
    np.testing.assert_array_equal(out[1], images[1][:, ::-1])


@pytest.mark.parametrize("mode", ["CONSTANT", "REFLECT"])
def test_every_crop_is_tf_pad_s_padded_image_at_its_offset(mode):
    images = np.random.default_rng(1).integers(1, 256, (6, 6, 7, 2)).astype(np.uint8)
    offsets = np.array([[0, 0], [4, 4], [1, 3], [2, 2], [3, 0], [0, 4]])
    flips = np.array([False, True, True, False, True, False])
    out = augment_batch(images, offsets, flips, Augmentation(2, mode, True))
    padded = tf.pad(images, [[0, 0], [2, 2], [2, 2], [0, 0]], mode=mode).numpy()
    for i, (row, column) in enumerate(offsets):
        crop = padded[i, row : row + 6, column : column + 7]
        np.testing.assert_array_equal(out[i], crop[:, ::-1] if flips[i] else crop)
    assert mode == "CONSTANT" or out.min() > 0, "reflection pads with image pixels, never black"


def test_training_batches_are_crops_of_the_raw_images_and_digits_are_never_flipped(numpy_pipeline):
    dataset = make_dataset("digits", "train", 64, training=True, seed=2, limit=64, reshuffle_each_iteration=False)
    images, labels = dataset[0]
    raw, raw_labels = load_arrays("digits", "train", limit=64)
    info = dataset_info("digits")
    black = np.float32((0 - info.mean[0]) / info.std[0])
    padded = np.pad(raw, ((0, 0), (2, 2), (2, 2), (0, 0)))
    for image, label in zip(images, labels):
        candidates = np.flatnonzero(raw_labels == label)
        found = any(
            np.array_equal(image, normalize(padded[i, r : r + 32, c : c + 32], info.mean, info.std))
            for i in candidates
            for r in range(5)
            for c in range(5)
        )
        assert found, "every training image is an unflipped crop of a padded raw image of its label"
    assert (images == black).any(), "some crop shifts black padding in"


# --------------------------------------------------------------- choice


def test_tf_data_serves_where_tensorflow_is_installed_and_numpy_elsewhere(monkeypatch, without_tensorflow):
    assert input_pipeline() == "numpy"
    assert isinstance(make_dataset("digits", "test", 100, training=False), NumpyBatches)
    monkeypatch.setitem(sys.modules, "tensorflow", tf)
    assert input_pipeline() == "tf.data"


def test_the_override_is_checked(monkeypatch, without_tensorflow):
    monkeypatch.setenv(PIPELINE_ENV, "tf.data")
    with pytest.raises(TensorFlowMissing, match=f"{PIPELINE_ENV}=tf.data .* TensorFlow is not installed"):
        input_pipeline()
    monkeypatch.setenv(PIPELINE_ENV, "grain")
    with pytest.raises(ValueError, match=f"{PIPELINE_ENV}='grain' names no input pipeline; use one of tf.data, numpy"):
        input_pipeline()


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_without_tensorflow_says_what_is_missing_and_what_to_install(without_tensorflow, name):
    message = (
        f"Dataset '{name}' is read through tensorflow-datasets, which needs TensorFlow, and TensorFlow is not "
        r"installed .* pip install 'mfef-keras\[cpu\]' .* digits, fashion_mnist or folder:PATH"
    )
    with pytest.raises(TensorFlowMissing, match=message):
        dataset_info(name)
    with pytest.raises(TensorFlowMissing, match=message):
        make_dataset(name, "train", 8, training=True)


def test_an_image_folder_serves_the_tf_data_pipeline_s_evaluation_batches(monkeypatch, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            (tmp_path / split / name).mkdir(parents=True)
            for index in range(6):
                # One image of another size: both pipelines resize it with the same decoder.
                size = (20, 16) if index == 0 else (16, 16)
                pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / name / f"{index}.png")
    served = {}
    for pipeline in ("tf.data", "numpy"):
        monkeypatch.setenv(PIPELINE_ENV, pipeline)
        served[pipeline] = [
            (np.asarray(x), np.asarray(y)) for x, y in make_dataset(f"folder:{tmp_path}", "test", 5, training=False)
        ]
    assert [len(y) for _, y in served["numpy"]] == [5, 5, 2]
    for (images, labels), (tf_images, tf_labels) in zip(served["numpy"], served["tf.data"]):
        np.testing.assert_array_equal(images, tf_images)
        np.testing.assert_array_equal(labels, tf_labels)
