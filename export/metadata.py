"""What travels with an exported artefact: its interface, provenance, versions and hashes (no TensorFlow here).

The same *model card* is written twice: into ``metadata.json`` beside the artefacts (with the
artefacts' hashes and the validation figures) and, key by key, into each ONNX file's
``metadata_props``, so that a lone ``.onnx`` file still says how to feed it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path

from mfef_keras.file_hashing import sha256_file

EXPORT_FORMAT = "mfef-export/1"
# Defaults of `export_student` and ``mfef export`` (here, as the CLI must not import TensorFlow to show them).
DEFAULT_OPSET = 17
DEFAULT_CALIBRATION_SAMPLES = 512
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
PROP_PREFIX = "mfef."

# Distribution names, in the order they are looked for: the CPU and GPU builds of TensorFlow and
# onnxruntime are different distributions of the same module (spec §7, pitfall 6).
_PACKAGES = ("mfef-keras", "keras", "tensorflow", "tensorflow-cpu", "tf2onnx", "onnx", "onnxruntime", "onnxruntime-gpu")


def sha256_path(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, or of a directory as its sorted relative paths each followed by its file's hash."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{sha256_file(file)}\n".encode())
    return digest.hexdigest()


def size_bytes(path: str | os.PathLike) -> int:
    """Bytes of a file, or of all files under a directory."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape an export, by distribution name."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


def model_card(
    *,
    class_names: Sequence[str],
    image_shape: Sequence[int],
    preprocess: bool,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    dataset: str | None,
    source: str,
    source_sha256: str,
    opset: int,
) -> dict:
    """The description of an exported classifier that its users need.

    Args:
        class_names: one name per output logit.
        image_shape: ``(height, width, channels)`` of one input image.
        preprocess: whether the graph takes raw uint8 pixels and normalises them itself.
        mean: per-channel mean of images scaled to [0, 1] (None when unknown).
        std: per-channel standard deviation of images scaled to [0, 1] (None when unknown).
        dataset: name of the training dataset, when known.
        source: what was exported (path or zoo name).
        source_sha256: sha256 of the source ``.keras`` file.
        opset: ONNX opset of the ONNX artefacts.
    """
    height, width, channels = (int(v) for v in image_shape)
    normalization = None if mean is None else {"mean": [float(m) for m in mean], "std": [float(s) for s in std]}
    return {
        "format": EXPORT_FORMAT,
        "class_names": [str(name) for name in class_names],
        "num_classes": len(class_names),
        "input": {
            "name": INPUT_NAME,
            "shape": [None, height, width, channels],
            "layout": "NHWC",
            "dtype": "uint8" if preprocess else "float32",
            "preprocess": bool(preprocess),
            "expects": "raw pixel values 0..255"
            if preprocess
            else "normalised images (x / 255 - mean) / std, as float32",
        },
        "normalization": normalization,
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "meaning": "logits; softmax gives probabilities"},
        "dataset": dataset,
        "source": source,
        "source_sha256": source_sha256,
        "opset": int(opset),
        "versions": package_versions(),
    }


def onnx_props(card: Mapping) -> dict[str, str]:
    """The card as ONNX ``metadata_props``: one ``mfef.<key>`` entry per key, each value JSON-encoded."""
    return {PROP_PREFIX + key: json.dumps(value, sort_keys=True) for key, value in card.items()}


def card_from_props(props: Mapping[str, str]) -> dict:
    """The card stored by `onnx_props` (empty when the model was not exported by mfef_keras).

    Args:
        props: the ONNX model's ``metadata_props``.

    Raises:
        ValueError: an ``mfef.`` entry that is not JSON (the message names the entry).
    """
    card = {}
    for key, value in props.items():
        if key.startswith(PROP_PREFIX):
            try:
                card[key[len(PROP_PREFIX) :]] = json.loads(value)
            except json.JSONDecodeError as error:
                raise ValueError(f"its metadata_props entry {key!r} is not valid JSON ({error})") from None
    return card
