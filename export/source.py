"""What ``mfef export SOURCE`` names: a run, a student directory, a zoo preset or a bare ``.keras`` file."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import keras

from mfef_keras.data.info import DatasetInfo
from mfef_keras.export.errors import ExportError
from mfef_keras.student_dir import METADATA_FILE, MODEL_FILE, load_keras_file, load_student_dir, resolve_student_source

ACCEPTED = (
    "a run directory (with students/ and best_student/), a student directory (model.keras + metadata.json), "
    "a zoo preset name, or a .keras file"
)


@dataclass
class LoadedSource:
    """A student ready to export.

    Args:
        model: the Keras student (normalised float32 NHWC images -> logits).
        model_file: its ``.keras`` file (hashed into the export's metadata).
        metadata: the student's metadata, or None for a bare ``.keras`` file with none beside it.
        description: the SOURCE as the user gave it, with what it resolved to.
    """

    model: keras.Model
    model_file: Path
    metadata: dict | None
    description: str

    @property
    def dataset_info(self) -> DatasetInfo | None:
        """The training dataset's description, when the metadata has one."""
        if self.metadata is None or "dataset" not in self.metadata:
            return None
        return DatasetInfo.from_dict(self.metadata["dataset"])


def load_source(source: str | os.PathLike, student: int | None = None) -> LoadedSource:
    """Load the student that ``source`` names.

    Args:
        source: a run directory, a student directory, a zoo preset name or a ``.keras`` file.
        student: index of the student to take from a run directory (default: its best student).
    """
    path = Path(source)
    if path.is_file() and path.suffix == ".keras":
        if student is not None:
            raise ExportError(f"--student applies to run directories; {str(source)!r} is a single .keras file.")
        return _load_keras_file(path)
    if path.is_dir():
        return _load_student_dir(path, student, str(source))
    # Anything else may be a zoo preset: a name, an archive path or a URL.
    if student is not None:
        raise ExportError(f"--student applies to run directories; {str(source)!r} is not one.")
    found = "a file but not a .keras model" if path.is_file() else "not an existing path"
    preset = _zoo_preset(str(source), found)
    return _load_student_dir(preset, None, f"{source} (zoo preset at {preset})")


def _load_student_dir(path: Path, student: int | None, description: str) -> LoadedSource:
    try:
        directory = resolve_student_source(path, student)
        model, metadata = load_student_dir(directory)
    except (ValueError, FileNotFoundError) as error:
        raise ExportError(f"{error} SOURCE must be {ACCEPTED}.") from error
    if directory != path:
        description = f"{description} ({directory.relative_to(path).as_posix()})"
    return LoadedSource(model, directory / MODEL_FILE, metadata, description)


def _load_keras_file(path: Path) -> LoadedSource:
    try:
        model = load_keras_file(path)
    except Exception as error:
        raise ExportError(f"Cannot load the Keras model {path}: {error}") from error
    # A model.keras taken out of a student directory still has its metadata beside it.
    sibling = path.parent / METADATA_FILE
    metadata = None
    if sibling.is_file():
        try:
            metadata = json.loads(sibling.read_text())
        except json.JSONDecodeError as error:
            raise ExportError(f"{sibling} (the metadata beside {path.name}) is not valid JSON: {error}") from None
    return LoadedSource(model, path, metadata, str(path))


def _zoo_preset(source: str, found: str) -> Path:
    try:
        from mfef_keras.zoo import resolve_preset
    except ImportError as error:
        raise ExportError(
            f"SOURCE {source!r} is {found}, and zoo presets cannot be looked up ({error}). SOURCE must be {ACCEPTED}."
        ) from None
    try:
        return Path(resolve_preset(source))
    except Exception as error:
        raise ExportError(
            f"SOURCE {source!r} is {found} nor a usable zoo preset ({error}). SOURCE must be {ACCEPTED}."
        ) from None
