"""What ``mfef export SOURCE`` loads: the student `mfef_keras.training.model_source` resolves, as an `ExportError`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import keras

from mfef_keras.data.info import DatasetInfo
from mfef_keras.export.errors import ExportError
from mfef_keras.student_card import StudentCard
from mfef_keras.training.model_source import resolve_model_source


@dataclass
class LoadedSource:
    """A student ready to export.

    Args:
        model: the Keras student (normalised float32 NHWC images -> logits).
        model_file: its ``.keras`` file (hashed into the export's metadata).
        card: the student's `StudentCard`, or None for a bare ``.keras`` file with no metadata.json beside it.
        description: the SOURCE as the user gave it, with what it resolved to.
    """

    model: keras.Model
    model_file: Path
    card: StudentCard | None
    description: str

    @property
    def dataset_info(self) -> DatasetInfo | None:
        """The training dataset's description, when there is a card."""
        return None if self.card is None else self.card.dataset


def load_source(source: str | os.PathLike, student: int | None = None) -> LoadedSource:
    """Load the student that ``source`` names.

    Args:
        source: a run directory, a student directory, a zoo preset name or a ``.keras`` file.
        student: index of the student to take from a run directory (default: its best student).
    """
    try:
        resolved = resolve_model_source(source, student)
        model = resolved.load()
    except (ValueError, FileNotFoundError) as error:
        raise ExportError(str(error)) from error
    return LoadedSource(model, resolved.model_file, resolved.card, resolved.description)
