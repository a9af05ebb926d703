"""Every parser of outside input gives a result or its own one-line error on any input, never another exception.

Inputs are drawn by hypothesis around each format's valid form (a real header with random fields, random bytes after
a valid magic number, JSON of random shape), where a parser's checks are most likely to miss a case. Each test runs
a few dozen examples in about a second (ten times as many passed when these were written); no example database is
kept, and a failure prints the input that caused it.
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mfef_keras.data import dataset_info
from mfef_keras.data.idx_files import IDX_DTYPES, parse_idx, read_idx_gz
from mfef_keras.data.image_files import ImageFileError, load_image
from mfef_keras.data.info import DatasetInfo
from mfef_keras.export.errors import PredictError
from mfef_keras.export.images import load_images
from mfef_keras.export.metadata import card_from_props
from mfef_keras.export.npy_files import check_npy_sizes
from mfef_keras.student_dir import read_card
from mfef_keras.zoo.errors import ZooError
from mfef_keras.zoo.manifest import read_manifest

FAST = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=20, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _one_line_error(call, *kinds: type[Exception]):
    """``call()``'s result, or None when it raised one of ``kinds`` with a one-line message naming the problem."""
    try:
        return call()
    except kinds as error:
        message = str(error)
        assert message and "\n" not in message, repr(message)
        return None


def _scratch() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="mfef-property-")


# ------------------------------------------------------------------------------------------------------ IDX


idx_headers = st.builds(
    lambda code, dims, tail: b"\0\0" + bytes([code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + tail,
    st.sampled_from([*IDX_DTYPES, 0x00, 0x0A, 0xFF]),
    st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 6), max_size=6),
    st.binary(max_size=64),
)


@FAST
@given(idx_headers | st.binary(max_size=64))
def test_idx_data_parses_or_is_refused_in_one_line(data):
    array = _one_line_error(lambda: parse_idx(data, "x.idx"), ValueError)
    if array is not None:
        assert array.nbytes == len(data) - 4 - 4 * data[3]


@FAST
@given(idx_headers | st.binary(max_size=64), st.booleans())
def test_idx_gzip_files_read_or_are_refused_in_one_line(data, compress):
    with _scratch() as folder:
        path = Path(folder) / "x.gz"
        path.write_bytes(gzip.compress(data) if compress else data)
        _one_line_error(lambda: read_idx_gz(path), ValueError)


# ------------------------------------------------------------------------------------------------------ .npy


def _npy_bytes(header: dict | str, payload: bytes) -> bytes:
    text = header if isinstance(header, str) else repr(header)
    body = text.encode("latin1", "replace")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body + payload


npy_files = st.builds(
    _npy_bytes,
    st.fixed_dictionaries(
        {
            "descr": st.sampled_from(["|u1", "<f4", "<i8", "|b1", "O", "<U3", "bogus"]),
            "fortran_order": st.booleans(),
            "shape": st.lists(st.integers(-2, 40) | st.integers(0, 2**62), max_size=5).map(tuple),
        }
    )
    | st.text(max_size=40),
    st.binary(max_size=256),
)


@FAST
@given(npy_files | st.binary(max_size=64))
def test_npy_batches_load_or_are_refused_in_one_line(data):
    with _scratch() as folder:
        path = Path(folder) / "batch.npy"
        path.write_bytes(data)
        _one_line_error(lambda: check_npy_sizes([path]), PredictError)
        _one_line_error(lambda: load_images([path], (2, 2, 1)), PredictError)


# ------------------------------------------------------------------------------------------------------ images


def _png(width: int, height: int, mode: str) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


images = st.builds(
    lambda png, cut, noise: png[:cut] + noise,
    st.builds(_png, st.integers(1, 40), st.integers(1, 40), st.sampled_from(["L", "RGB", "RGBA", "I;16", "P", "1"])),
    st.integers(0, 400),
    st.binary(max_size=32),
)


def _with_ihdr_size(png: bytes, width: int, height: int) -> bytes:
    # The IHDR chunk follows the 8-byte signature and its 8-byte length and type; its CRC is left stale.
    return png[:16] + struct.pack(">II", width, height) + png[24:]


@FAST
@given(images | st.builds(_with_ihdr_size, images, st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1)))
def test_images_decode_or_are_refused_in_one_line(data):
    with _scratch() as folder:
        path = Path(folder) / "x.png"
        path.write_bytes(data)
        image = _one_line_error(lambda: load_image(path), ImageFileError)
        if image is not None:
            assert image.width * image.height <= 8192 * 8192


# ------------------------------------------------------------------------------------------------------ JSON


manifests = st.fixed_dictionaries(
    {
        "format": st.sampled_from(["mfef-zoo/1", "other"]),
        "presets": st.dictionaries(
            st.sampled_from(["resnet8_mfef.digits_s0", "bad name", ""]) | st.text(max_size=12),
            json_values
            | st.fixed_dictionaries(
                {
                    "sha256": st.sampled_from(["0" * 64, "xyz"]),
                    "size": st.integers(-1, 10) | json_values,
                    "url": st.sampled_from(["https://example.invalid/a.tar.gz", "ftp://x", ""]) | json_values,
                }
            ),
            max_size=3,
        )
        | json_values,
    }
)


@FAST
@given(manifests | json_values, st.booleans())
def test_manifests_read_or_are_refused_in_one_line(data, as_json):
    with _scratch() as folder:
        path = Path(folder) / "manifest.json"
        path.write_text(json.dumps(data) if as_json else str(data))
        _one_line_error(lambda: read_manifest(path), ZooError)


dataset_dicts = st.fixed_dictionaries(
    {
        "name": st.text(max_size=8) | json_values,
        "num_classes": st.integers(-2, 12) | json_values,
        "class_names": st.lists(st.text(max_size=3), max_size=4) | json_values,
        "image_shape": st.lists(st.integers(-1, 40), max_size=4) | json_values,
        "mean": st.lists(st.floats(allow_nan=False), max_size=3) | json_values,
        "std": st.lists(st.floats(allow_nan=False), max_size=3) | json_values,
        "splits": st.dictionaries(st.sampled_from(["train", "test", "val"]), st.integers(-1, 9) | json_values),
    }
)


@FAST
@given(
    st.fixed_dictionaries({"format": st.just("mfef-student/1"), "dataset": dataset_dicts | json_values}) | json_values
)
def test_student_metadata_reads_or_is_refused_in_one_line(data):
    with _scratch() as folder:
        (Path(folder) / "metadata.json").write_text(json.dumps(data))
        card = _one_line_error(lambda: read_card(folder), ValueError)
        if card is not None:
            assert DatasetInfo.from_dict(card.dataset.to_dict()) == card.dataset


@FAST
@given(dataset_dicts | json_values)
def test_dataset_descriptions_parse_or_are_refused_in_one_line(data):
    _one_line_error(lambda: DatasetInfo.from_dict(data), ValueError)


@FAST
@given(st.dictionaries(st.sampled_from(["mfef.input", "mfef.class_names", "other"]) | st.text(max_size=8), st.text()))
def test_onnx_model_cards_parse_or_are_refused_in_one_line(props):
    _one_line_error(lambda: card_from_props(props), ValueError)


# ------------------------------------------------------------------------------------------------------ folders


layouts = st.lists(
    st.tuples(
        st.sampled_from(["train", "test", "valid", "other"]),
        st.sampled_from(["a", "b", "c", ".hidden"]),
        st.sampled_from(["0.png", "1.png", "x.jpg", "notes.txt", "sub/2.png"]),
        st.sampled_from(["png", "garbage", "empty", "directory"]),
    ),
    max_size=10,
)


@SLOW
@given(layouts)
def test_image_folder_layouts_load_or_are_refused(layout):
    with _scratch() as folder:
        root = Path(folder)
        for split, label, name, content in layout:
            path = root / split / label / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                continue
            if content == "directory":
                path.mkdir()
            else:
                path.write_bytes({"png": _png(8, 8, "L"), "garbage": b"\x89PNG junk", "empty": b""}[content])
        try:
            info = dataset_info(f"folder:{root}")
        except (ValueError, FileNotFoundError) as error:
            # The listing of unusable files takes a line each; every error still names a path under the root.
            assert str(root) in str(error), str(error)
        else:
            assert info.num_classes >= 2 and np.prod(info.image_shape) > 0
