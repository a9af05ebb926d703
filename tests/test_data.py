"""Dataset registry and input pipeline: digits, CIFAR through tensorflow-datasets, image folders.

Fashion-MNIST has its own file, tests/test_fashion_mnist.py.
"""

import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections import Counter

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.core.download import checksums
from tensorflow_datasets.image_classification import cifar

from mfef_keras.data import (
    dataset_info,
    default_data_dir,
    image_files,
    image_folder,
    list_datasets,
    load_arrays,
    make_dataset,
)
from mfef_keras.data import digits as digits_module
from mfef_keras.data.image_files import ImageFileError, load_image
from mfef_keras.data.image_folder import CINIC10_MEAN, CINIC10_STD, CINIC10_URL
from mfef_keras.data.pipeline import augment, normalise
from mfef_keras.data.source import Augmentation
from mfef_keras.data.tfds_cifar import ARCHIVES, CLASS_NAMES, MEAN, STD
from mfef_keras.layers.image_normalization import ImageNormalization
from tests.bad_images import png_bomb


def _batches(dataset):
    return [(x.numpy(), y.numpy()) for x, y in dataset]


def _normalised_range(info):
    mean, std = np.array(info.mean), np.array(info.std)
    return ((0 - mean) / std).min(), ((1 - mean) / std).max()


# ------------------------------------------------------------------ registry


def test_list_datasets():
    assert list_datasets() == ["cifar10", "cifar100", "cinic10", "digits", "fashion_mnist"]


@pytest.mark.parametrize(
    ("bad", "suggestion"),
    [("digit", "digits"), ("cifar1000", "cifar100"), ("cinic", "cinic10"), ("fashion-mnist", "fashion_mnist")],
)
def test_unknown_dataset_lists_names_and_suggests(bad, suggestion):
    with pytest.raises(ValueError) as error:
        make_dataset(bad, "train", 8, training=False)
    message = str(error.value)
    assert repr(bad) in message and f"Did you mean {suggestion!r}" in message
    assert "cifar10, cifar100, cinic10, digits, fashion_mnist, folder:PATH" in message


def test_unknown_split_lists_splits():
    with pytest.raises(ValueError, match=r"'tset'.*Allowed: test, train, val\. Did you mean 'test'"):
        load_arrays("digits", "tset")


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"batch_size": True}, {"limit": 0}, {"limit": 2.5}])
def test_bad_batch_size_or_limit(kwargs):
    arguments = {"batch_size": 8, **kwargs}
    with pytest.raises(ValueError, match="must be a positive integer"):
        make_dataset("digits", "train", arguments.pop("batch_size"), training=False, **arguments)


def test_default_data_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MFEF_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv("MFEF_DATA_DIR")
    assert default_data_dir().parts[-2:] == (".mfef", "data")


# -------------------------------------------------------------------- digits


def test_digits_info_and_stratified_split():
    info = dataset_info("digits")
    assert info.name == "digits" and info.num_classes == 10 and info.class_names == tuple("0123456789")
    assert info.image_shape == (32, 32, 1)
    # 10 % of the 1,437 training images held out for validation
    assert info.splits == {"train": 1293, "val": 144, "test": 360}

    x_train, y_train = load_arrays("digits", "train")
    x_val, y_val = load_arrays("digits", "val")
    x_test, y_test = load_arrays("digits", "test")
    assert x_train.shape == (1293, 32, 32, 1) and x_val.shape == (144, 32, 32, 1) and x_test.shape == (360, 32, 32, 1)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int32
    assert x_train.min() == 0 and x_train.max() == 255
    # Stratified: each class is split 80/20 to within one image, and 10 % of its training images validate.
    train_counts, val_counts, test_counts = (Counter(y.tolist()) for y in (y_train, y_val, y_test))
    for label in range(10):
        total = train_counts[label] + val_counts[label] + test_counts[label]
        assert abs(test_counts[label] - 0.2 * total) <= 1
        assert abs(val_counts[label] - 0.1 * (train_counts[label] + val_counts[label])) <= 1
    # The stored constants are the statistics of the whole training split, validation images included.
    scaled = np.concatenate([x_train, x_val]) / 255.0
    assert info.mean == pytest.approx((scaled.mean(),), abs=5e-5)
    assert info.std == pytest.approx((scaled.std(),), abs=5e-5)
    # Different images in the two splits, and the split is fixed.
    assert not np.array_equal(x_train[:360], x_test)
    np.testing.assert_array_equal(load_arrays("digits", "test", limit=5)[1], y_test[:5])


def test_digits_training_batches():
    info = dataset_info("digits")
    dataset = make_dataset("digits", "train", 128, training=True)
    assert int(dataset.cardinality()) == 11
    batches = _batches(dataset)
    assert [len(y) for _, y in batches] == [128] * 10 + [13]  # the last partial batch is kept
    images, labels = batches[0]
    assert images.shape == (128, 32, 32, 1) and images.dtype == np.float32 and labels.dtype == np.int32
    low, high = _normalised_range(info)
    all_images = np.concatenate([x for x, _ in batches])
    assert low - 1e-5 <= all_images.min() and all_images.max() <= high + 1e-5
    # Every training example appears once per epoch.
    all_labels = np.concatenate([y for _, y in batches])
    assert Counter(all_labels.tolist()) == Counter(load_arrays("digits", "train")[1].tolist())


def test_test_pipeline_is_the_normalisation_layer_in_order():
    info = dataset_info("digits")
    images, labels = load_arrays("digits", "test")
    batches = _batches(make_dataset("digits", "test", 100, training=False))
    assert [len(y) for _, y in batches] == [100, 100, 100, 60]
    expected = np.asarray(ImageNormalization(info.mean, info.std)(images))
    np.testing.assert_allclose(np.concatenate([x for x, _ in batches]), expected, atol=1e-6)
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), labels)


def test_normalise_is_the_layer_formula():
    images = np.random.default_rng(0).integers(0, 256, (4, 5, 5, 3)).astype(np.uint8)
    layer = ImageNormalization(MEAN["cifar100"], STD["cifar100"])
    expected = np.asarray(layer(images))
    np.testing.assert_allclose(normalise(images, MEAN["cifar100"], STD["cifar100"]).numpy(), expected, atol=1e-6)


def test_training_pipeline_is_deterministic_and_reshuffles():
    def two_epochs(seed):
        dataset = make_dataset("digits", "train", 64, training=True, seed=seed, limit=200)
        return _batches(dataset), _batches(dataset)

    first, second = two_epochs(0), two_epochs(0)
    for epoch_a, epoch_b in zip(first, second):
        for (xa, ya), (xb, yb) in zip(epoch_a, epoch_b, strict=True):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
    epoch_1, epoch_2 = (np.concatenate([y for _, y in epoch]) for epoch in first)
    assert not np.array_equal(epoch_1, epoch_2) and sorted(epoch_1) == sorted(epoch_2)
    other_seed = np.concatenate([y for _, y in two_epochs(1)[0]])
    assert not np.array_equal(epoch_1, other_seed)


def test_limit_takes_the_first_examples():
    _, labels = load_arrays("digits", "train")
    batches = _batches(make_dataset("digits", "train", 16, training=False, limit=50))
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), labels[:50])
    assert len(load_arrays("digits", "test", limit=10_000)[0]) == 360
    assert len(load_arrays("digits", "test", limit=np.int64(3))[0]) == 3


def test_digits_constants_are_recomputable():
    x_train, _ = digits_module._split_arrays()["train"]
    assert digits_module.MEAN == (round(float((x_train / 255.0).mean()), 4),)
    assert digits_module.STD == (round(float((x_train / 255.0).std()), 4),)


# -------------------------------------------------------------- augmentation


def _windows(padded, size):
    for top in range(padded.shape[0] - size[0] + 1):
        for left in range(padded.shape[1] - size[1] + 1):
            yield padded[top : top + size[0], left : left + size[1]]


@pytest.mark.parametrize("mode", ["CONSTANT", "REFLECT"])
def test_augment_is_a_padded_crop_and_maybe_a_flip(mode):
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3)).astype(np.uint8)
    padded = np.pad(image, ((2, 2), (2, 2), (0, 0)), mode="constant" if mode == "CONSTANT" else "reflect")
    windows = list(_windows(padded, (8, 8)))
    seen_flips, seen_offsets = set(), set()
    for seed in range(40):
        out = augment(tf.constant(image), tf.constant([seed, 7, seed, 11], tf.int64), Augmentation(2, mode, True))
        out = out.numpy()
        assert out.shape == image.shape and out.dtype == np.uint8
        plain = [i for i, w in enumerate(windows) if np.array_equal(out, w)]
        flipped = [i for i, w in enumerate(windows) if np.array_equal(out, w[:, ::-1])]
        assert plain or flipped
        seen_flips.add(bool(flipped))
        seen_offsets.add((plain or flipped)[0])
    assert seen_flips == {True, False} and len(seen_offsets) > 5

    never_flipped = Augmentation(2, mode, flip=False)
    for seed in range(10):
        out = augment(tf.constant(image), tf.constant([seed, 7, seed, 11], tf.int64), never_flipped).numpy()
        assert any(np.array_equal(out, w) for w in windows)


# --------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_through_tfds_mock(name, tmp_path):
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    # Preparation is mocked away; the archive only has to be where the loader looks for it.
    (manual / ARCHIVES[name].filename).write_bytes(b"placeholder")
    num_classes = 10 if name == "cifar10" else 100
    with tfds.testing.mock_data(num_examples=20):
        info = dataset_info(name, data_dir=tmp_path)
        images, labels = load_arrays(name, "test", data_dir=tmp_path)
        train = _batches(make_dataset(name, "train", 8, training=True, data_dir=tmp_path))
        val = load_arrays(name, "val", data_dir=tmp_path)[1]
        test = _batches(make_dataset(name, "test", 8, training=False, data_dir=tmp_path))
    assert info.num_classes == num_classes and info.class_names == CLASS_NAMES[name]
    assert info.image_shape == (32, 32, 3) and info.splits == {"train": 45_000, "val": 5_000, "test": 10_000}
    assert info.mean == MEAN[name] and info.std == STD[name]
    assert images.shape == (20, 32, 32, 3) and images.dtype == np.uint8
    # The mock has 20 training examples: 10 % of them (2) are held out, as 5,000 would be more than 10 %.
    assert [len(y) for _, y in train] == [8, 8, 2] and len(val) == 2
    x, y = train[0]
    assert x.shape == (8, 32, 32, 3) and x.dtype == np.float32 and y.dtype == np.int32
    assert all(0 <= label < num_classes for _, batch in train for label in batch)
    low, high = _normalised_range(info)
    assert all(low - 1e-5 <= x.min() and x.max() <= high + 1e-5 for x, _ in train)
    expected = (images / 255.0 - np.array(info.mean)) / np.array(info.std)
    np.testing.assert_allclose(np.concatenate([x for x, _ in test]), expected, atol=1e-5)
    np.testing.assert_array_equal(np.concatenate([y for _, y in test]), labels)


def test_cifar_recipe_constants():
    assert MEAN["cifar100"] == pytest.approx((0.50706, 0.48667, 0.44078), abs=1e-5)
    assert STD["cifar100"] == pytest.approx((0.26745, 0.25647, 0.27608), abs=1e-5)
    assert MEAN["cifar10"] == (0.4914, 0.4822, 0.4465) and STD["cifar10"] == (0.2023, 0.1994, 0.2010)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_archive_facts_match_tfds(name):
    builder_class = cifar.Cifar10 if name == "cifar10" else cifar.Cifar100
    archive = ARCHIVES[name]
    registered = builder_class.url_infos[archive.url]
    assert (registered.size, registered.checksum, registered.filename) == (
        archive.size,
        archive.sha256,
        archive.filename,
    )


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_without_data_fails_fast(name, tmp_path):
    archive = ARCHIVES[name]
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as error:
        make_dataset(name, "train", 128, training=True, data_dir=tmp_path)
    assert time.perf_counter() - start < 2.0
    message = str(error.value)
    assert str(tmp_path / "downloads" / "manual" / archive.filename) in message
    assert archive.sha256 in message and f"{archive.size:,}" in message


def test_cifar_wrong_archive_names_the_expected_one(tmp_path):
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    (manual / "cifar-10-binary.tar.gz").write_bytes(b"not the archive")
    with pytest.raises(ValueError) as error:
        load_arrays("cifar10", "test", data_dir=tmp_path)
    assert ARCHIVES["cifar10"].sha256 in str(error.value) and "15 bytes" in str(error.value)


def _tiny_cifar10_archive(path, names, rng):
    def batch(count):
        labels = rng.integers(0, 10, count, dtype=np.uint8)
        pixels = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
        images = pixels.reshape(count, 3, 32, 32).transpose(0, 2, 3, 1)
        return labels, images, np.concatenate([labels[:, None], pixels], axis=1).tobytes()

    with tarfile.open(path, "w:gz") as tar:

        def add(name, data):
            member = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))

        add("batches.meta.txt", "\n".join(names).encode() + b"\n")
        for index in range(1, 6):
            add(f"data_batch_{index}.bin", batch(2)[2])
        labels, images, data = batch(3)
        add("test_batch.bin", data)
    return labels, images


def test_cifar_is_prepared_from_a_manually_placed_archive(tmp_path, monkeypatch):
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    archive_path = manual / "cifar-10-binary.tar.gz"
    names = [f"class_{i}" for i in range(10)]
    labels, images = _tiny_cifar10_archive(archive_path, names, np.random.default_rng(0))
    # A tiny archive in the official format: register its checksum in place of the real one.
    url_info = checksums.compute_url_info(archive_path)
    monkeypatch.setattr(cifar.Cifar10, "url_infos", {ARCHIVES["cifar10"].url: url_info})

    loaded_images, loaded_labels = load_arrays("cifar10", "test", data_dir=tmp_path)
    # tensorflow-datasets stores the examples in its own (fixed) order.
    assert sorted(zip(loaded_labels.tolist(), (i.tobytes() for i in loaded_images))) == sorted(
        zip(labels.tolist(), (i.tobytes() for i in images))
    )
    assert dataset_info("cifar10", data_dir=tmp_path).class_names == tuple(names)
    # 10 training images: one is held out for validation.
    assert sum(len(y) for _, y in make_dataset("cifar10", "train", 4, training=True, data_dir=tmp_path)) == 9
    assert len(load_arrays("cifar10", "val", data_dir=tmp_path)[1]) == 1


# ------------------------------------------------------------- image folders


def _image_tree(root, classes=("cat", "dog", "fox"), per_split=None, size=(32, 32), mode="RGB", seed=0):
    """Random images whose first pixel encodes the class, so labels can be checked from pixels."""
    rng = np.random.default_rng(seed)
    channels = 1 if mode == "L" else 3
    for split, count in (per_split or {"train": 6, "test": 2}).items():
        for label, name in enumerate(classes):
            directory = root / split / name
            directory.mkdir(parents=True)
            for index in range(count):
                pixels = rng.integers(0, 256, (*size, channels), dtype=np.uint8)
                pixels[0, 0] = 50 * label
                Image.fromarray(pixels.squeeze(-1) if mode == "L" else pixels, mode).save(directory / f"{index}.png")
    # Debris the scan must skip: a non-image file, a macOS resource fork and a hidden directory.
    (root / "train" / classes[0] / "notes.txt").write_text("not an image")
    (root / "train" / classes[0] / "._0.png").write_bytes(b"resource fork")
    (root / "train" / ".ipynb_checkpoints").mkdir()


def test_folder_dataset(tmp_path, capsys):
    _image_tree(tmp_path, per_split={"train": 6, "test": 2, "valid": 1})
    # A differently sized image, first in sorted order, is resized to the most common size.
    Image.fromarray(np.full((40, 36, 3), 100, np.uint8)).save(tmp_path / "train" / "dog" / "0_big.jpg")
    name = f"folder:{tmp_path}"
    info = dataset_info(name)
    note = "note: 1 image of another size is resized to 32x32, the most common size of the 19 training images under"
    assert f"{note} {tmp_path}.\n" in capsys.readouterr().err
    assert info.name == name and info.class_names == ("cat", "dog", "fox") and info.num_classes == 3
    assert info.image_shape == (32, 32, 3)
    # The folder's own valid/ is the validation split: nothing is held out of train.
    assert info.splits == {"train": 19, "val": 3, "test": 6}

    images, labels = load_arrays(name, "train")
    assert images.shape == (19, 32, 32, 3) and images.dtype == np.uint8
    assert Counter(labels.tolist()) == {0: 6, 1: 7, 2: 6}
    # A fixed random order, so a prefix (limit) mixes the classes.
    assert len(set(labels[:6].tolist())) > 1
    stamped = images[:, 0, 0, 0] != 100  # the resized image has no class stamp
    np.testing.assert_array_equal(images[stamped, 0, 0, 0], 50 * labels[stamped])
    scaled = images / 255.0
    assert info.mean == pytest.approx(tuple(scaled.mean(axis=(0, 1, 2))), abs=1e-4)
    assert info.std == pytest.approx(tuple(scaled.std(axis=(0, 1, 2))), abs=1e-4)

    batches = _batches(make_dataset(name, "train", 8, training=True))
    assert [x.shape for x, _ in batches] == [(8, 32, 32, 3), (8, 32, 32, 3), (3, 32, 32, 3)]
    low, high = _normalised_range(info)
    assert all(low - 1e-5 <= x.min() and x.max() <= high + 1e-5 for x, _ in batches)
    valid = _batches(make_dataset(name, "val", 8, training=False))
    assert sorted(valid[0][1].tolist()) == [0, 1, 2]


def test_grayscale_folder_has_one_channel(tmp_path):
    _image_tree(tmp_path, classes=("a", "b"), mode="L")
    info = dataset_info(f"folder:{tmp_path}")
    assert info.image_shape == (32, 32, 1) and len(info.mean) == len(info.std) == 1
    # No valid/: 10 % of the 12 training images, rounded, validates.
    assert info.splits == {"train": 11, "val": 1, "test": 4}
    x, _ = next(iter(make_dataset(f"folder:{tmp_path}", "test", 4, training=True)))
    assert x.shape == (4, 32, 32, 1)


def _truncated_png(path):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:300])


def test_every_bad_file_is_named_before_any_training(tmp_path, monkeypatch):
    _image_tree(tmp_path)
    broken = tmp_path / "test" / "dog" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    truncated = tmp_path / "train" / "fox" / "truncated.png"
    _truncated_png(truncated)
    name = f"folder:{tmp_path}"
    with pytest.raises(ValueError) as error:
        make_dataset(name, "train", 4, training=True)
    message = str(error.value)
    assert message.startswith(f"2 of the 26 image files under {tmp_path} cannot be used:")
    assert f"Cannot decode image {broken}: not an image format PIL knows" in message
    assert f"Cannot decode image {truncated}: image file is truncated" in message
    # Past a limit, the rest are counted rather than listed.
    monkeypatch.setattr(image_folder, "MAX_LISTED_BAD_FILES", 1)
    with pytest.raises(ValueError, match=r"2 of the 26 .*\n  .*\n  \.\.\. and 1 more\.\nRemove or replace them"):
        dataset_info(name)


def test_a_file_broken_after_the_check_is_named_by_the_pipeline(tmp_path):
    _image_tree(tmp_path)
    dataset = make_dataset(f"folder:{tmp_path}", "test", 4, training=False)
    victim = tmp_path / "test" / "dog" / "0.png"
    victim.write_bytes(b"garbage")
    # Raised inside tf.data, it reaches the caller as a TensorFlow error that carries the message.
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"Cannot decode image {victim}"):
        _batches(dataset)


def test_fifo_is_refused_without_blocking(tmp_path):
    _image_tree(tmp_path)
    fifo = tmp_path / "train" / "cat" / "x.png"
    os.mkfifo(fifo)

    def blocked(*_):
        raise AssertionError(f"opening {fifo} blocked")

    # Opening a FIFO that no one writes to blocks forever; the alarm turns that into a failure.
    previous = signal.signal(signal.SIGALRM, blocked)
    signal.alarm(10)
    try:
        with pytest.raises(ImageFileError, match=f"{fifo} is a FIFO, not a regular file"):
            load_image(fifo)
        with pytest.raises(ValueError, match=f"1 of the 25 .*\n  {fifo} is a FIFO, not a regular file"):
            dataset_info(f"folder:{tmp_path}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_decompression_bombs_are_refused_naming_the_file_and_the_limit(tmp_path, monkeypatch):
    _image_tree(tmp_path)
    bomb = tmp_path / "train" / "dog" / "bomb.png"
    png_bomb(bomb)
    # PIL itself refuses this size in Image.open, before any pixel is decoded.
    with pytest.raises(ValueError, match=f"{bomb} declares more than 178,956,970 pixels, over the limit of 67,108,864"):
        dataset_info(f"folder:{tmp_path}")
    # Sizes between our limit and PIL's are refused by our own check, which reads the header's size.
    bomb.unlink()
    monkeypatch.setattr(image_files, "MAX_IMAGE_PIXELS", 31 * 31)
    with pytest.raises(ValueError, match=r"0.png declares 32x32 pixels, over the limit of 961 \(31x31\); refused"):
        dataset_info(f"folder:{tmp_path}")


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    _image_tree(tmp_path, classes=("a", "b"), mode="L")
    values = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)
    for index, path in enumerate(sorted(tmp_path.glob("t*/*/*.png"))):
        Image.fromarray(np.roll(values, index)).save(path)
    assert load_image(path).mode == "L"
    info = dataset_info(f"folder:{tmp_path}")
    assert info.image_shape == (32, 32, 1)
    images, _ = load_arrays(f"folder:{tmp_path}", "test")
    expected = np.rint(values.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert all(any(np.array_equal(image[..., 0], np.roll(expected, i)) for i in range(16)) for image in images)
    assert len(np.unique(images)) == 256


def test_input_size_is_the_most_common_training_size(tmp_path, capsys):
    def save(split, name, count, size, mode="RGB"):
        for index in range(count):
            path = tmp_path / split / name / f"{size[0]}x{size[1]}_{index}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new(mode, size[::-1]).save(path)

    # One big image sorted first among smaller ones (it set the whole dataset's size before).
    save("train", "a", 1, (256, 256))
    save("train", "a", 3, (16, 24))
    save("train", "b", 3, (8, 8), mode="L")
    save("test", "a", 1, (16, 24))
    save("test", "b", 1, (8, 8))
    # 3 each of 16x24 and 8x8: the smaller wins the tie; one colour training image makes it 3 channels.
    assert dataset_info(f"folder:{tmp_path}").image_shape == (8, 8, 3)
    assert "note: 5 images of other sizes are resized to 8x8, the most common size of the 7 training" in (
        capsys.readouterr().err
    )
    save("train", "b", 1, (16, 24))
    assert dataset_info(f"folder:{tmp_path}").image_shape == (16, 24, 3)


def test_progress_bar_only_on_large_folders(tmp_path, capsys, monkeypatch):
    _image_tree(tmp_path)
    dataset_info(f"folder:{tmp_path}")
    assert "Checking" not in capsys.readouterr().err
    monkeypatch.setattr(image_folder, "PROGRESS_MIN_FILES", 10)
    # Every file is checked again once one changed, even in the same process.
    (tmp_path / "test" / "cat" / "0.png").write_bytes(b"")
    with pytest.raises(ValueError, match="0.png: not an image format"):
        dataset_info(f"folder:{tmp_path}")
    assert f"Checking {tmp_path}: 100%" in capsys.readouterr().err


def test_train_on_a_corrupt_test_image_fails_cleanly_before_writing(tmp_path):
    root = tmp_path / "data"
    _image_tree(root, classes=("a", "b"))
    broken = root / "test" / "b" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    run = tmp_path / "run"
    command = [sys.executable, "-m", "mfef_keras.cli", "train", "--dataset", f"folder:{root}", "--epochs", "1"]
    command += ["--run-dir", str(run), "--base-width", "4", "--no-progress"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    error = result.stderr[result.stderr.index("Error: ") :].splitlines()
    assert error == [
        f"Error: 1 of the 17 image files under {root} cannot be used:",
        f"  Cannot decode image {broken}: not an image format PIL knows",
        "Remove or replace them: images must be regular PNG/JPEG files of at most 67,108,864 pixels.",
    ]
    assert not run.exists()


def test_missing_folder_names_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist\. Expected the layout .*/\{train,test\[,valid\]\}/"):
        dataset_info(f"folder:{tmp_path / 'nowhere'}")
    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"has no test directory \(found: \['train'\]\)"):
        dataset_info(f"folder:{tmp_path}")
    (tmp_path / "train" / "dog").mkdir()
    (tmp_path / "test" / "cat").mkdir(parents=True)
    (tmp_path / "test" / "dog").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "cat" / "0.png")
    with pytest.raises(ValueError, match=r"train/dog, .*test/cat, .*test/dog hold\(s\) no \.png/\.jpg/\.jpeg images"):
        dataset_info(f"folder:{tmp_path}")


def test_one_class_is_refused(tmp_path):
    _image_tree(tmp_path, classes=("cat",))
    with pytest.raises(ValueError, match=r"train has 1 class sub-directory \['cat'\]; a classifier needs at least 2"):
        dataset_info(f"folder:{tmp_path}")


def test_splits_must_have_the_same_classes(tmp_path):
    _image_tree(tmp_path, per_split={"train": 2, "test": 1, "valid": 1})
    (tmp_path / "test" / "owl").mkdir()
    with pytest.raises(ValueError, match=r"test differ from those of .*train: it has \['owl'\], which train does not"):
        dataset_info(f"folder:{tmp_path}")
    (tmp_path / "test" / "owl").rmdir()
    for image in (tmp_path / "valid" / "fox").iterdir():
        image.unlink()
    (tmp_path / "valid" / "fox").rmdir()
    message = r"valid differ from those of .*train: it lacks \['fox'\]\. Every split needs .*\['cat', 'dog', 'fox'\]"
    with pytest.raises(ValueError, match=message):
        dataset_info(f"folder:{tmp_path}")


def test_cinic10(tmp_path, monkeypatch):
    monkeypatch.setenv("MFEF_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError) as error:
        dataset_info("cinic10")
    assert str(tmp_path / "cinic10") in str(error.value) and CINIC10_URL in str(error.value)

    _image_tree(tmp_path / "cinic10", classes=("airplane", "automobile"), per_split={"train": 2, "valid": 1, "test": 1})
    info = dataset_info("cinic10")
    assert info.mean == CINIC10_MEAN and info.std == CINIC10_STD
    assert info.splits == {"train": 4, "val": 2, "test": 2}
    x, y = next(iter(make_dataset("cinic10", "val", 2, training=False)))
    assert x.shape == (2, 32, 32, 3) and sorted(y.numpy().tolist()) == [0, 1]


def test_without_reshuffling_every_iterator_sees_the_same_batches():
    import numpy as np

    from mfef_keras.data import make_dataset

    dataset = make_dataset("digits", "train", 32, training=True, seed=3, limit=96, reshuffle_each_iteration=False)
    first = [x.numpy() for x, _ in dataset]
    second = [x.numpy() for x, _ in dataset]
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    reshuffled = make_dataset("digits", "train", 32, training=True, seed=3, limit=96)
    a, b = [x.numpy() for x, _ in reshuffled], [x.numpy() for x, _ in reshuffled]
    assert not all(np.array_equal(x, y) for x, y in zip(a, b))
