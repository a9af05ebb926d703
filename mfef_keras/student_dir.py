"""A student directory: a trained student's `model.keras` with the `metadata.json` that says how to feed it.

Run directories keep one per student (``students/s{i}``) and the best one as ``best_student``;
zoo presets are student directories too. The metadata's ``dataset`` entry is a
`DatasetInfo` dict, so class names, input size and normalisation travel with the weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from mfef_keras._regular_files import check_regular, read_regular
from mfef_keras.atomic_files import staged_directory, write_json_atomic
from mfef_keras.data.info import DatasetInfo
from mfef_keras.model_files import METADATA_FILE, MODEL_FILE

FORMAT = "mfef-student/1"

if TYPE_CHECKING:
    import keras


def save_student_dir(path: str | os.PathLike, model: keras.Model, metadata: dict) -> Path:
    """Save ``model`` and ``metadata`` (which must hold a ``dataset`` DatasetInfo dict) as a student directory.

    The directory is assembled beside its destination and renamed into place, so an
    interrupted save leaves no half-written student behind.
    """
    path = Path(path)
    if "dataset" not in metadata:
        raise ValueError("Student metadata needs a 'dataset' entry (a DatasetInfo dict).")
    DatasetInfo.from_dict(metadata["dataset"])
    with staged_directory(path) as staging:
        model.save(staging / MODEL_FILE)
        write_json_atomic(staging / METADATA_FILE, {"format": FORMAT, **metadata})
    return path


def is_student_dir(path: str | os.PathLike) -> bool:
    path = Path(path)
    return (path / MODEL_FILE).is_file() and (path / METADATA_FILE).is_file()


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata of a student directory: a JSON object whose ``dataset`` entry, if any, is a `DatasetInfo` dict.

    Raises:
        FileNotFoundError: there is no metadata.json.
        ValueError: naming the file, when it is not such an object.
    """
    path = Path(path)
    file = path / METADATA_FILE
    try:
        metadata = json.loads(read_regular(file))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is not a student directory: {METADATA_FILE} is missing.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{file} is not valid JSON: {error}") from None
    if not isinstance(metadata, dict):
        raise ValueError(f"{file} holds a {type(metadata).__name__}, not a JSON object of student metadata.")
    if "dataset" in metadata:
        try:
            DatasetInfo.from_dict(metadata["dataset"])
        except ValueError as error:
            raise ValueError(f"{file}, entry 'dataset': {error}") from None
    return metadata


def load_keras_file(path: str | os.PathLike) -> keras.Model:
    """Load a ``.keras`` file in Keras safe mode (no code from the file runs), the package's layers registered.

    Students are saved as plain Keras networks, but those written before that (and other models the
    package saves) hold its layers, which Keras finds only once `mfef_keras.layers` is imported.

    Args:
        path: the ``.keras`` file.
    """
    # Imported here: resolving a SOURCE or reading metadata must not cost TensorFlow's start-up.
    import keras

    import mfef_keras.layers  # noqa: F401

    return keras.saving.load_model(check_regular(path, "loaded as a Keras model"), safe_mode=True)


def load_student_dir(path: str | os.PathLike) -> tuple[keras.Model, dict]:
    """Load the model (with `load_keras_file`) and the metadata of a student directory."""
    path = Path(path)
    metadata = read_metadata(path)
    try:
        model = load_keras_file(path / MODEL_FILE)
    except Exception as error:
        raise ValueError(f"Cannot load the student model {path / MODEL_FILE}: {error}") from error
    return model, metadata
