"""What SOURCE means for every command that takes a trained student (``mfef eval``, ``mfef export``, the zoo).

One of: a run directory (its best student, or student K), a student or preset directory, a zoo name
(or preset archive/URL), or a ``.keras`` file (with the ``metadata.json`` beside it when there is
one). Resolving reads no weights and imports no Keras; `ModelSource.load` does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mfef_keras.model_files import METADATA_FILE, MODEL_FILE
from mfef_keras.preset_resolver import resolve_preset
from mfef_keras.student_card import StudentCard
from mfef_keras.student_dir import is_student_dir, load_keras_file, read_card

if TYPE_CHECKING:
    import keras

# A run directory's config.json (`mfef_keras.training.run_directory.CONFIG_FILE`), written when its training starts.
RUN_CONFIG_FILE = "config.json"

ACCEPTED = (
    "a run directory (with students/ and best_student/), a student directory (model.keras + metadata.json), "
    "a zoo preset name, or a .keras file"
)


@dataclass
class ModelSource:
    """A resolved SOURCE.

    Args:
        kind: ``"run"``, ``"unfinished_run"`` (its best student so far), ``"student"`` (a student or preset
            directory), ``"zoo"`` or ``"keras"`` (a bare file).
        model_file: the ``.keras`` file.
        card: the student's card, or None for a ``.keras`` file with no metadata.json beside it.
        description: the SOURCE as the user gave it, with what it resolved to.
        note: what the user should know about the choice (a run still training gives its best student so far).
    """

    kind: str
    model_file: Path
    card: StudentCard | None
    description: str
    note: str | None = None

    def load(self) -> keras.Model:
        """The Keras student, loaded in safe mode; ValueError naming the file if it cannot be."""
        try:
            return load_keras_file(self.model_file)
        except Exception as error:
            raise ValueError(f"Cannot load the student model {self.model_file}: {error}") from error


def resolve_model_source(source: str | os.PathLike, student: int | None = None) -> ModelSource:
    """Resolve ``source`` to its ``.keras`` file and metadata.

    Args:
        source: a run directory, a student or preset directory, a zoo preset name (or archive path or
            URL) or a ``.keras`` file.
        student: index of the student to take from a run directory (default: its best student).

    Raises:
        ValueError: ``source`` is none of these, or ``student`` is given for something other than a run.
        FileNotFoundError: a run directory has no saved student yet.
    """
    path = Path(source)
    if (path / "students").is_dir():
        directory = _run_student(path, student)
        return ModelSource(
            "run",
            directory / MODEL_FILE,
            read_card(directory),
            f"{source} ({directory.relative_to(path).as_posix()})",
        )
    if (path / RUN_CONFIG_FILE).is_file():
        return _unfinished_run(path, student)
    if student is not None:
        raise ValueError(f"--student applies to run directories; {str(source)!r} is not one.")
    if is_student_dir(path):
        return ModelSource("student", path / MODEL_FILE, read_card(path), str(source))
    if path.is_file() and path.suffix == ".keras":
        # A model.keras taken out of a student directory still has its metadata beside it.
        card = read_card(path.parent) if (path.parent / METADATA_FILE).is_file() else None
        return ModelSource("keras", path, card, str(source))
    if path.is_dir():
        raise ValueError(f"{source!s} holds no student: SOURCE must be {ACCEPTED}.")
    preset = _zoo_preset(str(source), "a file but not a .keras model" if path.is_file() else "not an existing path")
    return ModelSource("zoo", preset / MODEL_FILE, read_card(preset), f"{source} (zoo preset at {preset})")


def _run_student(run: Path, student: int | None) -> Path:
    if student is None:
        chosen = run / "best_student"
    else:
        available = sorted(p.name for p in (run / "students").iterdir() if is_student_dir(p))
        chosen = run / "students" / f"s{int(student)}"
        if chosen.name not in available:
            raise ValueError(f"Run {run} has no student {student}; it has {', '.join(available) or 'none'}.")
    if not is_student_dir(chosen):
        raise FileNotFoundError(f"Run {run} has no saved student at {chosen} (did training finish an epoch?).")
    return chosen


def _unfinished_run(run: Path, student: int | None) -> ModelSource:
    """The best student so far of a run that has not saved its students/ (still training, or stopped).

    Raises:
        ValueError: ``student`` is given: students/s<K> are saved only when training ends.
        FileNotFoundError: no epoch has completed, so not even best_student/ is there.
    """
    from mfef_keras.training.run_lock import lock_holder

    holder = lock_holder(run)
    state = f"still training ({holder})" if holder else "unfinished (its trainer stopped before the last epoch)"
    best = run / "best_student"
    if student is not None:
        raise ValueError(
            f"Run {run} is {state}: students/s{student} is saved when training ends. Only {best} (the best student "
            "so far) can be evaluated now: leave out --student."
        )
    if not is_student_dir(best):
        raise FileNotFoundError(
            f"Run {run} is {state} and has completed no epoch yet, so it holds no student to evaluate; wait for its "
            "first epoch to finish."
        )
    card = read_card(best)
    epochs = (card.config or {}).get("epochs", "?")
    note = (
        f"note: run {run} is {state}; evaluating its best student so far, saved after epoch "
        f"{card.epoch or '?'} of {epochs} in {best}."
    )
    return ModelSource("unfinished_run", best / MODEL_FILE, card, f"{run} (best_student, unfinished)", note)


def _zoo_preset(source: str, found: str) -> Path:
    try:
        return Path(resolve_preset(source))
    except Exception as error:
        raise ValueError(
            f"SOURCE {source!r} is {found} nor a usable zoo preset ({error}). SOURCE must be {ACCEPTED}."
        ) from None
