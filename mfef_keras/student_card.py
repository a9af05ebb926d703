"""The `StudentCard`: one typed record of a trained student and what travels with it.

A student directory's ``metadata.json`` holds it; training writes it, the zoo publishes it as the preset
card, export stores it beside the exported model. Reading goes through `migrate`, the one place where
cards written by earlier versions are brought to the current layout.
"""

from __future__ import annotations

import json
import os
import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from mfef_keras._regular_files import read_regular
from mfef_keras.atomic_files import write_json_atomic
from mfef_keras.data.info import DatasetInfo

VERSION = 1
FORMAT = f"mfef-student/{VERSION}"
# Written even when None: a null base width means the backbone's own default, as training has always written it.
_ALWAYS_WRITTEN = ("base_width",)


@dataclass(frozen=True)
class StudentCard:
    """What a student is, how to feed it, how it was trained and how it scored.

    Every field but ``dataset`` may be None (absent from the file): a card written by hand or by a test
    needs only the dataset. Keys the card does not know are kept in ``extra`` and written back unchanged,
    so a card from a newer minor layout survives a read and a write.

    Args:
        dataset: the dataset's `DatasetInfo`: class names, input size and normalisation.
        backbone: the student's backbone (``"+"``-joined backbones for a fused classifier).
        base_width: the backbone's base width, None for its default.
        method: the training method; topology, num_students, cohort and deployed describe the cohort.
        student_index: which student of the cohort, None for a fused classifier.
        epoch: the epoch (from 1) after which it was saved; selection says how that epoch was chosen.
        test_accuracy, validation_accuracy, test_accuracy_last: its accuracies (fractions).
        seed, experiment_hash, config: the run that trained it.
        model, note: ``"fused"`` and a sentence for a fused classifier.
        name, license, created, params, reproduce, input, metrics, environment, data, published_from,
            training_log, training_log_file, study: what `mfef zoo publish` adds (study: the figures over seeds
            of the comparison study that trained it, see `mfef_keras.zoo.study_figures`).
        extra: keys of the file the card does not know.
        version: the card layout's version.

    Example:
        >>> from mfef_keras.data import dataset_info
        >>> card = StudentCard(dataset_info("digits"), backbone="resnet8", method="mfef")
        >>> StudentCard.from_dict(card.to_dict()) == card
        True
    """

    dataset: DatasetInfo
    backbone: str | None = None
    base_width: int | None = None
    method: str | None = None
    topology: str | None = None
    num_students: int | None = None
    cohort: list | None = None
    deployed: dict | None = None
    student_index: int | None = None
    epoch: int | None = None
    test_accuracy: float | None = None
    validation_accuracy: float | None = None
    test_accuracy_last: float | None = None
    selection: str | None = None
    seed: int | None = None
    experiment_hash: str | None = None
    config: dict | None = None
    model: str | None = None
    note: str | None = None
    name: str | None = None
    license: str | None = None
    created: str | None = None
    params: int | None = None
    reproduce: str | None = None
    input: dict | None = None
    metrics: dict | None = None
    environment: dict | None = None
    data: dict | None = None
    published_from: str | None = None
    training_log: list | None = None
    training_log_file: str | None = None
    study: dict | None = None
    extra: dict = field(default_factory=dict)
    version: int = VERSION

    def to_dict(self) -> dict:
        """The card as the JSON object of a ``metadata.json`` (None fields left out, extra keys kept)."""
        data = {"format": FORMAT, **self.extra, "dataset": self.dataset.to_dict()}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name not in ("dataset", "extra", "version") and (value is not None or item.name in _ALWAYS_WRITTEN):
                data[item.name] = value
        return data

    @classmethod
    def from_dict(cls, data: dict, source: str = "student card") -> StudentCard:
        """The card in ``data`` (any layout `migrate` knows), checked field by field.

        Args:
            data: the JSON object of a ``metadata.json``.
            source: what it was read from, for the message (a file name).

        Raises:
            ValueError: in one line naming ``source`` and the bad field.
        """
        data = migrate(data, source)
        if "dataset" not in data:
            raise ValueError(f"{source}: field 'dataset' is missing; a student card needs its DatasetInfo dict.")
        try:
            dataset = DatasetInfo.from_dict(data["dataset"])
        except ValueError as error:
            raise ValueError(f"{source}: field 'dataset': {error}") from None
        known = {name: allowed for name, allowed in _FIELD_TYPES.items() if name in data}
        for name, allowed in known.items():
            if not _is_a(data[name], allowed):
                kinds = " or ".join(sorted({kind.__name__.replace("NoneType", "null") for kind in allowed}))
                raise ValueError(f"{source}: field {name!r} must be {kinds}, not {data[name]!r:.60}.")
        extra = {key: value for key, value in data.items() if key not in _FIELD_TYPES and key not in _OWN_KEYS}
        return cls(dataset=dataset, extra=extra, **{name: data[name] for name in known})

    def updated(self, **changes) -> StudentCard:
        """A copy with ``changes`` applied (the card is frozen)."""
        return replace(self, **changes)


def migrate(data: dict, source: str = "student card") -> dict:
    """Bring a card of any layout written by an earlier version to the current one.

    Cards before the ``format`` key (hand-written ones, early student directories) are version 1 without
    the marker. Published presets before `StudentCard` keep their splits only under ``dataset``;
    those from later add ``data``: both are version 1 with optional fields, so no value changes.

    Raises:
        ValueError: ``data`` is not a JSON object, or its format is not a student card's.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{source} holds a {type(data).__name__}, not a JSON object of student metadata.")
    layout = data.get("format", FORMAT)
    if layout != FORMAT:
        raise ValueError(f"{source}: field 'format' is {layout!r}; this mfef reads {FORMAT!r} student cards.")
    return {**data, "format": FORMAT}


def read(path: str | os.PathLike) -> StudentCard:
    """The card in the JSON file ``path`` (a student directory's ``metadata.json``).

    Raises:
        FileNotFoundError: there is no such file.
        ValueError: in one line naming the file, when it is not valid JSON or not a valid card.
    """
    try:
        data = json.loads(read_regular(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    return StudentCard.from_dict(data, str(path))


def write(path: str | os.PathLike, card: StudentCard) -> Path:
    """Write ``card`` to ``path`` atomically (sorted keys, as every metadata.json is written)."""
    write_json_atomic(path, card.to_dict())
    return Path(path)


def _is_a(value, allowed: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in allowed:
        return False
    return isinstance(value, allowed) or (float in allowed and isinstance(value, int))


def _allowed(hint) -> tuple[type, ...]:
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return tuple(typing.get_origin(option) or option for option in options)


_HINTS = typing.get_type_hints(StudentCard)
_OWN_KEYS = ("format", "dataset", "extra", "version")
_FIELD_TYPES = {name: _allowed(hint) for name, hint in _HINTS.items() if name not in _OWN_KEYS}
