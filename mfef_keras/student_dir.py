"""A student directory: a trained student's `model.keras` with the `metadata.json` that says how to feed it.

Run directories keep one per student (``students/s{i}``) and the best one as ``best_student``;
zoo presets are student directories too. The metadata is the student's `StudentCard`, so class
names, input size and normalisation travel with the weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from mfef_keras import student_card
from mfef_keras._regular_files import check_regular
from mfef_keras.atomic_files import staged_directory
from mfef_keras.model_files import METADATA_FILE, MODEL_FILE
from mfef_keras.student_card import StudentCard

if TYPE_CHECKING:
    import keras


def save_student_dir(path: str | os.PathLike, model: keras.Model, card: StudentCard) -> Path:
    """Save ``model`` with its ``card`` as a student directory.

    The directory is assembled beside its destination and renamed into place, so an
    interrupted save leaves no half-written student behind.
    """
    path = Path(path)
    with staged_directory(path) as staging:
        model.save(staging / MODEL_FILE)
        student_card.write(staging / METADATA_FILE, card)
    return path


def is_student_dir(path: str | os.PathLike) -> bool:
    path = Path(path)
    return (path / MODEL_FILE).is_file() and (path / METADATA_FILE).is_file()


def read_card(path: str | os.PathLike) -> StudentCard:
    """The `StudentCard` of a student directory.

    Raises:
        FileNotFoundError: there is no metadata.json.
        ValueError: in one line naming the file and the field, when it is not a valid card.
    """
    try:
        return student_card.read(Path(path) / METADATA_FILE)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is not a student directory: {METADATA_FILE} is missing.") from None


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


def load_student_dir(path: str | os.PathLike) -> tuple[keras.Model, StudentCard]:
    """Load the model (with `load_keras_file`) and the card of a student directory."""
    path = Path(path)
    card = read_card(path)
    try:
        model = load_keras_file(path / MODEL_FILE)
    except Exception as error:
        raise ValueError(f"Cannot load the student model {path / MODEL_FILE}: {error}") from error
    return model, card
