"""Fashion-MNIST: the IDX reader, the file checks and the dataset, on generated files and on Debian's copy."""

import gzip
import hashlib
import os
import struct
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mfef_keras.choices import DATASETS
from mfef_keras.data import dataset_info, fashion_mnist, load_arrays, make_dataset
from mfef_keras.data.idx_files import parse_idx, read_idx_gz

OFFICIAL_CLASSES = (
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
SIZES = {"train": 40, "test": 12}


def _idx_bytes(array: np.ndarray) -> bytes:
    # The header of an unsigned-byte IDX file: 00 00 08 <ndim>, then each dimension as a big-endian uint32.
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _write_dataset(directory: Path, seed: int = 0) -> dict[str, str]:
    """Small Fashion-MNIST-shaped files in ``directory``; returns the sha256 of their decompressed content."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    hashes = {}
    for split, (images_name, labels_name) in fashion_mnist.FILES.items():
        images = rng.integers(0, 256, (SIZES[split], 28, 28), dtype=np.uint8)
        labels = (np.arange(SIZES[split]) % 10).astype(np.uint8)
        for name, array in ((images_name, images), (labels_name, labels)):
            data = _idx_bytes(array)
            (directory / name).write_bytes(gzip.compress(data))
            hashes[name] = hashlib.sha256(data).hexdigest()
    return hashes


@pytest.fixture
def generated(tmp_path, monkeypatch):
    """A data dir holding generated files whose hashes replace the official ones; no Debian copy."""
    hashes = _write_dataset(tmp_path / "fashion-mnist")
    for name, digest in hashes.items():
        monkeypatch.setitem(fashion_mnist.SHA256, name, digest)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")
    return tmp_path


# ------------------------------------------------------------------ IDX files


def test_parse_idx_reads_the_stored_shape_and_byte_order():
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    parsed = parse_idx(_idx_bytes(array), "x.idx")
    np.testing.assert_array_equal(parsed, array)
    assert not parsed.flags.writeable
    ints = np.array([1, -2, 70_000], dtype=">i4")
    parsed = parse_idx(bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 3) + ints.tobytes(), "i.idx")
    assert parsed.dtype == np.int32 and parsed.dtype.isnative and parsed.tolist() == [1, -2, 70_000]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", r"bad\.idx is not an IDX file: its magic number is missing"),
        (b"\x00\x00\x08", r"bad\.idx is not an IDX file: its magic number is 000008"),
        (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", r"bad\.idx is not an IDX file: .* 01000801"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", r"bad\.idx is not an IDX file"),
        (b"\x00\x00\x08\x00", r"bad\.idx is not an IDX file"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 5), r"bad\.idx is truncated: 8 bytes, shorter than its 16-byte"),
        (b"\x00\x00\x08\x02" + struct.pack(">II", 2, 3) + bytes(5), r"bad\.idx is truncated: a 2x3 array of uint8"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 2) + bytes(3), r"bad\.idx is longer than its header says"),
    ],
)
def test_malformed_idx_is_named(data, match):
    with pytest.raises(ValueError, match=match):
        parse_idx(data, "bad.idx")


def test_read_idx_gz_checks_the_decompressed_content(tmp_path):
    data = _idx_bytes(np.arange(10, dtype=np.uint8))
    path = tmp_path / "a.gz"
    # Two gzip streams of the same content differ (mtime in the header) but pass the same check.
    path.write_bytes(gzip.compress(data, mtime=1))
    digest = hashlib.sha256(data).hexdigest()
    assert read_idx_gz(path, digest.upper()).tolist() == list(range(10))
    assert read_idx_gz(path).tolist() == list(range(10))
    with pytest.raises(ValueError, match=rf"{path} is not the expected file: .* is {digest}, expected 0+\."):
        read_idx_gz(path, "0" * 64)
    path.write_bytes(gzip.compress(data)[:-12])
    with pytest.raises(ValueError, match=rf"{path} is not a complete gzip file"):
        read_idx_gz(path, digest)
    path.write_bytes(data)
    with pytest.raises(ValueError, match=rf"{path} is not a complete gzip file"):
        read_idx_gz(path, digest)


# ------------------------------------------------------------------ the dataset


def test_registered_with_the_official_facts(generated):
    assert "fashion_mnist" in DATASETS
    info = dataset_info("fashion_mnist", data_dir=generated)
    assert info.name == "fashion_mnist" and info.num_classes == 10 and info.class_names == OFFICIAL_CLASSES
    # 40 training images: too few for the fixed 5,000, so 10 % is held out for validation.
    assert info.image_shape == (28, 28, 1) and info.splits == {"train": 36, "val": 4, "test": 12}
    assert info.mean == (0.2860,) and info.std == (0.3530,)
    source = fashion_mnist.FashionMnistSource(generated)
    assert (source.augmentation.pad, source.augmentation.pad_mode, source.augmentation.flip) == (2, "CONSTANT", True)


def test_generated_files_load_and_batch(generated, monkeypatch):
    monkeypatch.setenv("MFEF_DATA_DIR", str(generated))
    images, labels = load_arrays("fashion_mnist", "test")
    assert images.shape == (12, 28, 28, 1) and images.dtype == np.uint8
    assert labels.dtype == np.int32 and labels.tolist() == [i % 10 for i in range(12)]
    stored = gzip.decompress((generated / "fashion-mnist" / "t10k-images-idx3-ubyte.gz").read_bytes())
    np.testing.assert_array_equal(images.reshape(-1), np.frombuffer(stored, np.uint8)[16:])
    batches = [(x.numpy(), y.numpy()) for x, y in make_dataset("fashion_mnist", "train", 16, training=True, seed=1)]
    assert [len(y) for _, y in batches] == [16, 16, 4]
    assert batches[0][0].shape == (16, 28, 28, 1) and batches[0][0].dtype == np.float32
    held_out = load_arrays("fashion_mnist", "val")[1]
    # Train and validation together are the whole training file; 4 of the 10 classes give one image each.
    trained = Counter(np.concatenate([y for _, y in batches]).tolist())
    assert trained + Counter(held_out.tolist()) == Counter(i % 10 for i in range(40))
    assert len(held_out) == 4 and len(set(held_out.tolist())) == 4
    again = [x.numpy() for x, _ in make_dataset("fashion_mnist", "train", 16, training=True, seed=1)]
    np.testing.assert_array_equal(batches[0][0], again[0])
    assert len(load_arrays("fashion_mnist", "train", limit=7)[0]) == 7


def test_hash_mismatch_names_the_file(generated):
    path = generated / "fashion-mnist" / "train-labels-idx1-ubyte.gz"
    labels = np.full(SIZES["train"], 3, np.uint8)
    path.write_bytes(gzip.compress(_idx_bytes(labels)))
    with pytest.raises(ValueError, match=rf"{path} is not the expected file: the sha256 of its decompressed content"):
        dataset_info("fashion_mnist", data_dir=generated)


def test_truncated_file_is_named(generated):
    path = generated / "fashion-mnist" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=rf"{path} is not a complete gzip file"):
        load_arrays("fashion_mnist", "test", data_dir=generated)


def test_wrong_arrays_are_named_even_with_matching_hashes(tmp_path):
    directory = tmp_path / "fashion-mnist"
    hashes = _write_dataset(directory)
    # Well-formed IDX files that are not Fashion-MNIST's: their own hashes pass, the content checks do not.
    cases = {
        "t10k-images-idx3-ubyte.gz": (np.zeros((12, 32, 32), np.uint8), r"holds uint8 images of shape \(32, 32\)"),
        "t10k-labels-idx1-ubyte.gz": (np.full(12, 10, np.uint8), r"holds label 10; Fashion-MNIST has 10 classes"),
        "train-labels-idx1-ubyte.gz": (
            np.zeros(39, np.uint8),
            r"holds 40 images but .*labels-idx1-ubyte\.gz 39 labels",
        ),
    }
    for name, (array, match) in cases.items():
        data = _idx_bytes(array)
        (directory / name).write_bytes(gzip.compress(data))
        wrong = dict(hashes, **{name: hashlib.sha256(data).hexdigest()})
        source = fashion_mnist.FashionMnistSource(tmp_path, system_dir=tmp_path / "none", sha256=wrong)
        with pytest.raises(ValueError, match=match):
            source.info()
        _write_dataset(directory)


def test_absent_files_name_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setenv("MFEF_DATA_DIR", str(tmp_path / "data"))
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as error:
        make_dataset("fashion_mnist", "train", 64, training=True)
    assert time.perf_counter() - start < 2.0
    message = str(error.value)
    assert "apt-get install dataset-fashion-mnist" in message and str(tmp_path / "data" / "fashion-mnist") in message
    assert all(name in message for name in fashion_mnist.SHA256)
    assert not (tmp_path / "data").exists()
    # A partial copy is reported, not silently completed from elsewhere.
    (tmp_path / "data" / "fashion-mnist").mkdir(parents=True)
    (tmp_path / "data" / "fashion-mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"holds only part of Fashion-MNIST: train-labels-idx1-ubyte\.gz, "):
        dataset_info("fashion_mnist", data_dir=tmp_path / "data")


def test_a_fifo_is_refused_without_blocking(generated):
    path = generated / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(ValueError, match=rf"{path} is not a regular file"):
        dataset_info("fashion_mnist", data_dir=generated)


def test_the_data_dir_copy_comes_before_the_debian_one(tmp_path, monkeypatch):
    hashes = _write_dataset(tmp_path / "debian", seed=1)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "debian")
    monkeypatch.setenv("MFEF_DATA_DIR", str(tmp_path / "data"))
    for name, digest in hashes.items():
        monkeypatch.setitem(fashion_mnist.SHA256, name, digest)
    from_debian = load_arrays("fashion_mnist", "test")[0]
    stored = gzip.decompress((tmp_path / "debian" / "t10k-images-idx3-ubyte.gz").read_bytes())
    np.testing.assert_array_equal(from_debian.reshape(-1), np.frombuffer(stored, np.uint8)[16:])
    # A data directory the user names is the only place read: no other copy stands in for what it lacks.
    (tmp_path / "data").mkdir()
    with pytest.raises(FileNotFoundError, match=f"not in the data directory given, {tmp_path / 'data'}: .* lacks t"):
        load_arrays("fashion_mnist", "test", data_dir=tmp_path / "data")
    local = _write_dataset(tmp_path / "data" / "fashion-mnist", seed=2)
    for name, digest in local.items():
        monkeypatch.setitem(fashion_mnist.SHA256, name, digest)
    from_data_dir = load_arrays("fashion_mnist", "test", data_dir=tmp_path / "data")[0]
    assert not np.array_equal(from_debian, from_data_dir)


def test_importing_the_dataset_module_leaves_tensorflow_out():
    import subprocess
    import sys

    code = "import sys, mfef_keras.data.fashion_mnist, mfef_keras.data; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ------------------------------------------------------------------ Debian's files


@pytest.mark.skipif(
    not all((fashion_mnist.DEBIAN_DIR / name).is_file() for name in fashion_mnist.SHA256),
    reason=f"Fashion-MNIST is not installed ({fashion_mnist.INSTALL_COMMAND})",
)
def test_the_installed_debian_files(tmp_path, monkeypatch):
    # An empty default data directory: a --data-dir the user names is read alone, never Debian's copy instead.
    monkeypatch.setenv("MFEF_DATA_DIR", str(tmp_path))
    for name, digest in fashion_mnist.SHA256.items():
        data = gzip.decompress((fashion_mnist.DEBIAN_DIR / name).read_bytes())
        assert hashlib.sha256(data).hexdigest() == digest, name
    info = dataset_info("fashion_mnist")
    assert info.splits == {"train": 55_000, "val": 5_000, "test": 10_000} and info.class_names == OFFICIAL_CLASSES
    # 5,000 validation images held out of the 60,000, 500 per class.
    for split, per_class in (("train", 5_500), ("val", 500), ("test", 1_000)):
        images, labels = load_arrays("fashion_mnist", split)
        assert images.shape == (10 * per_class, 28, 28, 1) and images.dtype == np.uint8
        assert np.bincount(labels).tolist() == [per_class] * 10
    # The normalisation constants are those of the whole training file, validation images included.
    scaled = fashion_mnist.FashionMnistSource(tmp_path).arrays("train")[0] / 255.0
    assert fashion_mnist.MEAN == (round(float(scaled.mean()), 4),)
    assert fashion_mnist.STD == (round(float(scaled.std()), 4),)
