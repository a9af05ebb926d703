"""`export_student`: a trained student to validated ONNX / SavedModel artefacts, written all or nothing."""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import keras
import numpy as np
import onnx

from mfef_keras._outputs import check_output_dir, writing_to
from mfef_keras._regular_files import read_regular
from mfef_keras.atomic_files import staged_directory, write_json_atomic
from mfef_keras.export import parity, runtime
from mfef_keras.export.datasets import check_classes, check_images, load_split, sample
from mfef_keras.export.errors import ExportError
from mfef_keras.export.formats import ALL, FORMATS
from mfef_keras.export.metadata import (
    DEFAULT_CALIBRATION_SAMPLES,
    DEFAULT_OPSET,
    EXPORT_FORMAT,
    model_card,
    onnx_props,
    sha256_path,
    size_bytes,
)
from mfef_keras.export.onnx_export import check_opset, convert, finalize
from mfef_keras.export.saved_model_export import SIGNATURE, load_saved_model, write_saved_model
from mfef_keras.export.serving_model import input_spec, serving_model
from mfef_keras.export.source import LoadedSource, load_source
from mfef_keras.file_hashing import sha256_file
from mfef_keras.model_files import METADATA_FILE, ONNX_FILE, QUANTIZED_FILES, SAVED_MODEL_DIR
from mfef_keras.normalization import normalize

QUANTIZE_MODES = ("int8", "fp16")
# Validation batches; the parity checks also run every artefact at parity.BATCH_SIZES.
_BATCH = 256


@dataclass
class ExportReport:
    """What an export wrote and how its artefacts measured against the Keras student.

    Args:
        out_dir: the export directory.
        artifacts: artefact name (``"onnx"``, ``"onnx_int8"``, ``"onnx_fp16"``, ``"saved_model"``) -> path.
        parity: every comparison made with the Keras student.
        accuracy: top-1 accuracy on the validation data by model (``"keras"`` and each artefact); empty without.
        validation_data: what the validation data was, or None.
        quantization: the quantization settings and figures, or None.
        metadata: the content of ``metadata.json``.

    Example:
        >>> report = export_student("runs/digits", "exported", formats="all", validate_on="digits")
        >>> report.accuracy["onnx"] == report.accuracy["keras"]
        True
    """

    out_dir: Path
    artifacts: dict[str, Path]
    parity: list[parity.ParityResult]
    accuracy: dict[str, float] = field(default_factory=dict)
    validation_data: str | None = None
    quantization: dict | None = None
    metadata: dict = field(default_factory=dict)

    def summary(self) -> str:
        """A few lines for people: artefacts with sizes, parity, accuracy and quantization."""
        lines = [f"Exported {self.metadata.get('source')} to {self.out_dir}"]
        for name, entry in self.metadata.get("artifacts", {}).items():
            lines.append(
                f"  {name:<12} {entry['path']:<18} {entry['bytes'] / 1e6:8.3f} MB  sha256 {entry['sha256'][:16]}"
            )
        lines.append("Parity with the Keras student:")
        lines += [f"  {result}" for result in self.parity]
        if self.accuracy:
            figures = "  ".join(f"{name} {value:.4f}" for name, value in self.accuracy.items())
            lines.append(f"Top-1 accuracy on {self.validation_data}: {figures}")
        if self.quantization:
            lines.append(f"Quantization: {_describe_quantization(self.quantization)}")
        artifacts = self.metadata.get("artifacts", {})
        if "onnx" in artifacts:
            int8 = f"; --int8 runs {QUANTIZED_FILES['int8']}" if "onnx_int8" in artifacts else ""
            lines.append(f"Predict with: mfef predict {self.out_dir} IMAGE...  (runs {ONNX_FILE}{int8})")
        return "\n".join(lines)


def _describe_quantization(quantization: dict) -> str:
    text = f"{quantization['mode']}: {quantization['bytes_fp32'] / 1e6:.3f} MB -> {quantization['bytes'] / 1e6:.3f} MB"
    if "calibration" in quantization:
        text += f"; calibrated on {quantization['calibration']}"
    if quantization.get("accuracy_change") is not None:
        text += f"; accuracy change vs fp32 {quantization['accuracy_change']:+.4f}"
    else:
        text += "; accuracy not measured (no validation data)"
    return text


@dataclass
class _Student:
    """The resolved export: the student, its interface and how to feed artefact and student alike."""

    source: LoadedSource
    image_shape: tuple[int, int, int]
    class_names: list[str]
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    preprocess: bool

    def inputs(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(artefact input, student input) for raw uint8 images (needs the normalisation: ``mean`` not None)."""
        normalized = normalize(raw, self.mean, self.std)
        return (raw if self.preprocess else normalized), normalized

    def parity_inputs(self, count: int) -> tuple[np.ndarray, np.ndarray, str]:
        """Seeded random images as (artefact input, student input, description)."""
        rng = np.random.default_rng(0)
        if self.mean is None:
            # Without a known normalisation, feed what the bare network takes: roughly standardised floats.
            floats = rng.standard_normal((count, *self.image_shape)).astype(np.float32)
            return floats, floats, f"{count} random normal float32 images"
        raw = rng.integers(0, 256, (count, *self.image_shape), dtype=np.uint8)
        return *self.inputs(raw), f"{count} random uint8 images"

    def keras_logits(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.source.model.predict(images, batch_size=_BATCH, verbose=0), np.float32)


def export_student(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    formats: str | Sequence[str] = ("onnx",),
    *,
    opset: int = DEFAULT_OPSET,
    preprocess: bool = True,
    quantize: str | None = None,
    validate_on: str | None = None,
    student: int | None = None,
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    calibrate_synthetic: bool = False,
    validation_data: tuple[np.ndarray, np.ndarray] | None = None,
    calibration_images: np.ndarray | None = None,
    overwrite: bool = False,
) -> ExportReport:
    """Export a trained student as ONNX and/or SavedModel, validate the artefacts and write them all or nothing.

    Every artefact is compared with the Keras student on the same images at batches 1, 2 and 7
    (fp32: max |logit difference| <= `parity.ATOL` and identical top-1, else `ParityError` and
    nothing is written). The artefacts are assembled in a directory beside ``out_dir`` and renamed
    into place at the end.

    Args:
        source: a run directory, a student directory, a zoo preset name or a ``.keras`` file.
        out_dir: the directory to create.
        formats: ``"onnx"``, ``"saved_model"``, ``"all"`` or a sequence of the first two.
        opset: ONNX opset (13..18 with tf2onnx 1.17).
        preprocess: the artefacts take raw uint8 images and normalise them; False exports the bare
            network, which takes normalised float32 images.
        quantize: also write an ``"int8"`` (static, QDQ, per-channel) or ``"fp16"`` ONNX model.
        validate_on: dataset whose test split measures the artefacts' top-1 accuracy beside the student's.
        student: index of the student to take from a run directory (default: its best student).
        calibration_samples: training images sampled for int8 calibration.
        calibrate_synthetic: calibrate int8 on random uint8 images, when no training data can be had;
            the activation ranges then do not reflect real images.
        validation_data: ``(raw uint8 NHWC images, labels)`` to validate on instead of ``validate_on``.
        calibration_images: raw uint8 NHWC images to calibrate on instead of the training split.
        overwrite: replace ``out_dir`` if it is a previous export (its metadata lists everything in it);
            any other non-empty folder is refused, as is an ``out_dir`` that is, holds or lies inside the
            source, or holds the current directory or the home.
    """
    if keras.backend.backend() != "tensorflow":
        # tf2onnx and SavedModel trace the student as TensorFlow code.
        raise ExportError(f"Export needs the TensorFlow Keras backend; KERAS_BACKEND is {keras.backend.backend()!r}.")
    formats = _formats(formats)
    if quantize not in (None, *QUANTIZE_MODES):
        raise ExportError(f"Unknown quantization {quantize!r}; choose one of {', '.join(QUANTIZE_MODES)}.")
    if quantize and "onnx" not in formats:
        raise ExportError(f"--quantize {quantize} quantizes the ONNX model; export with --format onnx or all.")
    if validate_on and validation_data is not None:
        raise ExportError("Give validate_on or validation_data, not both.")
    if calibration_samples < 1:
        raise ExportError(f"calibration_samples must be >= 1; got {calibration_samples}.")
    if "onnx" in formats:
        check_opset(opset)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, source, overwrite)

    resolved = _resolve(load_source(source, student), preprocess)
    validation = _validation(resolved, validate_on, validation_data, quantize, calibrate_synthetic)
    calibration = (
        _calibration(resolved, calibration_images, calibration_samples, calibrate_synthetic)
        if quantize == "int8"
        else None
    )

    publish = functools.partial(_publish, source=source, overwrite=overwrite)
    with writing_to(out_dir), staged_directory(out_dir, f".{out_dir.name}.partial-", install=publish) as staging:
        report = _write(resolved, staging, formats, opset, quantize, validation, calibration)
    report.out_dir = out_dir
    report.artifacts = {name: out_dir / path.relative_to(staging) for name, path in report.artifacts.items()}
    return report


def _formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    requested = tuple(FORMATS) if formats == ALL else ((formats,) if isinstance(formats, str) else tuple(formats))
    unknown = [name for name in requested if name not in FORMATS]
    if unknown or not requested:
        raise ExportError(f"Unknown export format(s) {unknown or requested}; choose from {', '.join(FORMATS)} or all.")
    return tuple(name for name in FORMATS if name in requested)


def _check_out_dir(out_dir: Path, source: str | os.PathLike, overwrite: bool) -> None:
    """Refuse an ``out_dir`` whose replacement could destroy anything but a previous export."""
    wanted = "a new or empty directory, or a previous export to replace with --force"
    allowed = f"--out must be {wanted}"
    # check_output_dir refuses a link first: the export is renamed into place as a whole, which a link cannot
    # take, and replacing the link instead would surprise whoever made it.
    check_output_dir(out_dir, allowed=wanted, error=ExportError)
    target = out_dir.resolve()
    if target == Path(target.anchor):
        raise ExportError(f"--out {out_dir} is the filesystem root; {allowed}.")
    for place, what in ((Path.cwd().resolve(), "the current directory"), (Path.home().resolve(), "your home")):
        # Replacing a folder that holds the current directory or the home would delete them with it.
        if place.is_relative_to(target):
            raise ExportError(f"--out {out_dir} ({target}) is or contains {what}; {allowed}.")
    origin = Path(source).resolve() if Path(source).exists() else None
    if origin is not None and (target.is_relative_to(origin) or origin.is_relative_to(target)):
        raise ExportError(
            f"--out {out_dir} ({target}) overlaps the source {source} ({origin}); "
            f"write the export outside the source and not around it: {allowed}."
        )
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise ExportError(
            f"--out {out_dir} exists and is not empty; choose another directory, or pass --force if it is a "
            "previous export to replace."
        )
    _check_previous_export(out_dir, allowed)


def _check_previous_export(out_dir: Path, allowed: str) -> None:
    """Refuse unless ``out_dir`` holds an export's metadata and nothing besides the artefacts it lists."""
    try:
        metadata = json.loads(read_regular(out_dir / METADATA_FILE))
        listed = {PurePosixPath(entry["path"]).parts[0] for entry in metadata["artifacts"].values()}
        recognised = metadata["format"] == EXPORT_FORMAT
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
        recognised = False
    if not recognised:
        raise ExportError(
            f"--out {out_dir} is not a previous export (no {METADATA_FILE} of format {EXPORT_FORMAT}); "
            f"--force replaces only an export, never another folder: {allowed}."
        )
    unexpected = sorted(p.name for p in out_dir.iterdir() if p.name != METADATA_FILE and p.name not in listed)
    if unexpected:
        raise ExportError(
            f"--out {out_dir} is an export but also holds {', '.join(unexpected)}, which its metadata does not "
            f"list; --force would delete them: move them away or choose another directory ({allowed})."
        )


def _publish(staging: Path, out_dir: Path, source: str | os.PathLike, overwrite: bool) -> None:
    # Checked again: --out may have changed while the artefacts were built and validated.
    _check_out_dir(out_dir, source, overwrite)
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        os.replace(staging, out_dir)
        return
    # The previous export is set aside, not deleted, until the new one is in place.
    aside = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.previous-", dir=out_dir.parent))
    os.replace(out_dir, aside / out_dir.name)
    try:
        os.replace(staging, out_dir)
    except BaseException:
        os.replace(aside / out_dir.name, out_dir)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def _resolve(loaded: LoadedSource, preprocess: bool) -> _Student:
    model = loaded.model
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ExportError(
            f"{loaded.description} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
            "a student has one of each."
        )
    model_shape = tuple(model.input_shape[1:])
    num_classes = int(model.output_shape[-1])
    info = loaded.dataset_info
    if info is None:
        if preprocess:
            raise ExportError(
                f"{loaded.description} has no metadata.json with its dataset, so the normalisation to embed is "
                "unknown: export it with --no-preprocess (the artefact then takes normalised float32 images), "
                "or export its student directory."
            )
        if any(v is None for v in model_shape):
            raise ExportError(f"{loaded.description} takes images of unknown size {model_shape}; need (H, W, C).")
        return _Student(loaded, model_shape, [str(i) for i in range(num_classes)], None, None, False)
    if model_shape != tuple(info.image_shape):
        raise ExportError(
            f"{loaded.description} takes images of shape {model_shape} but its metadata says {tuple(info.image_shape)}."
        )
    if num_classes != info.num_classes:
        raise ExportError(
            f"{loaded.description} predicts {num_classes} classes but its metadata lists {info.num_classes}."
        )
    return _Student(loaded, tuple(info.image_shape), list(info.class_names), info.mean, info.std, preprocess)


def _validation(
    resolved: _Student,
    validate_on: str | None,
    validation_data: tuple[np.ndarray, np.ndarray] | None,
    quantize: str | None,
    calibrate_synthetic: bool,
) -> tuple[np.ndarray, np.ndarray, str] | None:
    """(raw images, labels, description) to measure accuracy on, or None."""
    info = resolved.source.dataset_info
    if validation_data is not None:
        images, labels = validation_data
        what = "the given validation data"
    elif validate_on:
        if info is not None:
            # Labels index the class names: another dataset's labels would score the student on the wrong classes.
            check_classes(validate_on, info.class_names)
        images, labels = load_split(validate_on, "test")
        what = f"{validate_on} test split"
    elif quantize == "int8" and not calibrate_synthetic and info is not None:
        # An int8 model is only worth shipping with its accuracy change measured: use the student's own test split.
        images, labels = load_split(info.name, "test")
        what = f"{info.name} test split"
    else:
        return None
    if resolved.mean is None:
        raise ExportError(
            f"{resolved.source.description} has no metadata with its normalisation, so it cannot be validated on "
            "dataset images; export its student directory instead."
        )
    images = check_images(images, resolved.image_shape, what)
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(images):
        raise ExportError(f"{what} has {len(images)} images but {len(labels)} labels.")
    if labels.min() < 0 or labels.max() >= len(resolved.class_names):
        raise ExportError(
            f"{what} has labels {labels.min()}..{labels.max()}; the model has {len(resolved.class_names)} classes."
        )
    return images, labels, f"{what} ({len(images)} images)"


def _calibration(resolved: _Student, images: np.ndarray | None, count: int, synthetic: bool) -> tuple[np.ndarray, str]:
    """(artefact-ready calibration images, description)."""
    if resolved.mean is None:
        if not synthetic:
            raise ExportError(
                f"{resolved.source.description} has no metadata with its dataset, so there are no training images "
                "to calibrate int8 on; pass --calibrate-synthetic to calibrate on random images."
            )
        # A bare network of unknown normalisation: standardised noise is the closest to what it takes.
        floats = np.random.default_rng(0).standard_normal((count, *resolved.image_shape)).astype(np.float32)
        return floats, f"{count} synthetic random normal float32 images (--calibrate-synthetic; normalisation unknown)"
    if images is not None:
        raw = sample(check_images(images, resolved.image_shape, "calibration_images"), count)
        what = f"{len(raw)} given images"
    elif synthetic:
        raw = np.random.default_rng(0).integers(0, 256, (count, *resolved.image_shape), dtype=np.uint8)
        what = f"{count} synthetic random uint8 images (--calibrate-synthetic; ranges do not reflect real images)"
    else:
        name = resolved.source.dataset_info.name
        train, _ = load_split(name, "train")
        raw = sample(check_images(train, resolved.image_shape, f"{name} train split"), count)
        what = f"{len(raw)} images sampled from the {name} train split"
    return resolved.inputs(raw)[0], what


def _write(
    resolved: _Student,
    staging: Path,
    formats: tuple[str, ...],
    opset: int,
    quantize: str | None,
    validation: tuple[np.ndarray, np.ndarray, str] | None,
    calibration: tuple[np.ndarray, str] | None,
) -> ExportReport:
    card = model_card(
        class_names=resolved.class_names,
        image_shape=resolved.image_shape,
        preprocess=resolved.preprocess,
        mean=resolved.mean,
        std=resolved.std,
        dataset=None if resolved.source.dataset_info is None else resolved.source.dataset_info.name,
        source=resolved.source.description,
        source_sha256=sha256_file(resolved.source.model_file),
        opset=opset,
    )
    student = resolved.source.card
    if student is not None:
        # A run's fused classifier says it serves the whole cohort (the accuracy option); the export says so too.
        card.update({key: getattr(student, key) for key in ("model", "note") if getattr(student, key)})
        # The whole StudentCard rides along, into metadata.json, each ONNX file's metadata_props and the SavedModel.
        card["student"] = student.to_dict()
    checker = _Checker(resolved, validation)
    graph = serving_model(
        resolved.source.model, resolved.image_shape, resolved.mean if resolved.preprocess else None, resolved.std
    )
    spec = input_spec(resolved.image_shape, resolved.preprocess)
    artifacts: dict[str, Path] = {}
    quantization = None
    if "onnx" in formats:
        artifacts["onnx"] = staging / ONNX_FILE
        proto = convert(graph, spec, opset)
        onnx.save(finalize(proto, onnx_props(card), _doc(card, "fp32")), artifacts["onnx"])
        checker.check("onnx", _onnx_runner(artifacts["onnx"]))
        if quantize:
            name = f"onnx_{quantize}"
            artifacts[name] = staging / QUANTIZED_FILES[quantize]
            quantization = _quantize(quantize, proto, artifacts, name, card, calibration)
            checker.check(name, _onnx_runner(artifacts[name]), measure_only=True)
            _add_accuracy(quantization, checker.accuracy, name)
    if "saved_model" in formats:
        artifacts["saved_model"] = staging / SAVED_MODEL_DIR
        write_saved_model(graph, artifacts["saved_model"], spec, resolved.source.card)
        checker.check("saved_model", load_saved_model(artifacts["saved_model"], _BATCH))

    metadata = {
        **card,
        "artifacts": {name: _artifact_entry(name, path, staging) for name, path in artifacts.items()},
        "default_onnx": artifacts[f"onnx_{quantize}" if quantize else "onnx"].name if "onnx" in formats else None,
        "parity": [result.to_dict() for result in checker.results],
        "validation": {"data": validation[2], "accuracy": checker.accuracy} if validation else None,
        "quantization": quantization,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json_atomic(staging / METADATA_FILE, metadata)
    return ExportReport(
        staging,
        artifacts,
        checker.results,
        checker.accuracy,
        validation[2] if validation else None,
        quantization,
        metadata,
    )


class _Checker:
    """Runs each artefact beside the Keras student and keeps the parity and accuracy figures."""

    def __init__(self, resolved: _Student, validation: tuple[np.ndarray, np.ndarray, str] | None):
        self.results: list[parity.ParityResult] = []
        self.accuracy: dict[str, float] = {}
        count = sum(parity.BATCH_SIZES)
        self._inputs, student_inputs, self._data = resolved.parity_inputs(count)
        self._validation = None
        if validation is None:
            self._reference = resolved.keras_logits(student_inputs)
            return
        images, labels, what = validation
        artefact_inputs, validation_inputs = resolved.inputs(images)
        # One predict call for both sets: each call of a new Keras predict function traces it again.
        reference = resolved.keras_logits(np.concatenate([student_inputs, validation_inputs]))
        self._reference = reference[:count]
        self._validation = (artefact_inputs, labels, what, reference[count:])
        self.accuracy["keras"] = parity.accuracy(reference[count:], labels)

    def check(self, name: str, run, measure_only: bool = False) -> None:
        """Compare artefact ``name`` (``run``: inputs -> logits) with Keras; `ParityError` if an fp32 one fails."""
        tolerance = None if measure_only else parity.ATOL
        candidate = parity.at_batch_sizes(run, self._inputs)
        found = [
            parity.compare(
                name, self._reference, candidate, data=self._data, batch_sizes=parity.BATCH_SIZES, tolerance=tolerance
            )
        ]
        if self._validation is not None:
            inputs, labels, what, reference = self._validation
            logits = run(inputs)
            found.append(
                parity.compare(
                    name, reference, logits, data=what, batch_sizes=_chunks(len(inputs)), tolerance=tolerance
                )
            )
            self.accuracy[name] = parity.accuracy(logits, labels)
        self.results += found
        parity.require(found)


def _chunks(count: int) -> tuple[int, ...]:
    """The batch sizes in which ``count`` validation images are run."""
    return tuple(min(_BATCH, count - start) for start in range(0, count, _BATCH))


def _onnx_runner(path: Path):
    # Validation runs on the CPU provider: it is what every build has, and GPU kernels (TF32...) would blur parity.
    session = runtime.make_session(path, providers=[runtime.CPU])
    return lambda images: runtime.onnx_logits(session, images, _BATCH)


def _quantize(
    mode: str,
    proto: onnx.ModelProto,
    artifacts: dict[str, Path],
    name: str,
    card: dict,
    calibration: tuple[np.ndarray, str] | None,
) -> dict:
    """Write the quantized model ``artifacts[name]`` and return its settings."""
    from mfef_keras.export import quantize as quantizer  # onnxruntime.quantization needs sympy: import only when used

    path = artifacts[name]
    if mode == "int8":
        images, what = calibration
        quantizer.quantize_int8(artifacts["onnx"], path, images)
        quantized = onnx.load(path)
        settings = {"mode": "int8", **quantizer.INT8_SETTINGS, "calibration": what}
    else:
        quantized = quantizer.convert_fp16(proto)
        settings = {"mode": "fp16", "weights": "float16", "input_output": "unchanged (uint8 / float32 in, float32 out)"}
    onnx.save(finalize(quantized, onnx_props({**card, "quantization": settings}), _doc(card, mode)), path)
    return {**settings, "bytes_fp32": size_bytes(artifacts["onnx"]), "bytes": size_bytes(path)}


def _add_accuracy(quantization: dict, accuracy: dict[str, float], name: str) -> None:
    if name in accuracy:
        quantization.update(
            accuracy_fp32=accuracy["onnx"], accuracy=accuracy[name], accuracy_change=accuracy[name] - accuracy["onnx"]
        )
    else:
        quantization.update(accuracy_fp32=None, accuracy=None, accuracy_change=None)


def _artifact_entry(name: str, path: Path, staging: Path) -> dict:
    entry = {"path": path.relative_to(staging).as_posix(), "sha256": sha256_path(path), "bytes": size_bytes(path)}
    if name == "saved_model":
        entry["signature"] = SIGNATURE
    return entry


def _doc(card: dict, precision: str) -> str:
    shape = "x".join(str(v) for v in card["input"]["shape"][1:])
    return (
        f"mfef_keras student ({precision}) from {card['source']}: {shape} {card['input']['dtype']} NHWC images "
        f"-> {card['num_classes']} logits"
    )
