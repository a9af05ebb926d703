"""The preset directory: a student directory plus a model card and ``preset.json``, the hash of every file.

A preset holds ``model.keras`` and ``metadata.json`` (a student directory, see
`mfef_keras.student_dir`), ``README.md`` (the model card), ``metrics.csv`` (the training log; presets
published before it was shipped lack it) and ``preset.json``, which lists
the sha256 and size of every other file, so a preset can be checked wherever it lies.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mfef_keras._regular_files import read_regular
from mfef_keras.model_files import METADATA_FILE, MODEL_FILE
from mfef_keras.zoo.errors import IntegrityError
from mfef_keras.zoo.hashing import check_file, file_record

PRESET_FILE = "preset.json"
PRESET_FORMAT = "mfef-zoo-preset/1"
CARD_FILE = "README.md"
# The run's per-epoch losses and accuracies, shipped so the card's figures can be checked.
LOG_FILE = "metrics.csv"
REQUIRED_FILES = (MODEL_FILE, METADATA_FILE)


def write_preset_index(path: str | os.PathLike, name: str) -> dict:
    """Hash every file of the preset directory ``path`` into its ``preset.json``; returns the index.

    Args:
        path: the preset directory (flat: presets hold no subfolders).
        name: the preset's zoo name.
    """
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.name != PRESET_FILE)
    if any(not p.is_file() or p.is_symlink() for p in files):
        raise ValueError(f"A preset holds only plain files; {path} has other entries.")
    index = {"format": PRESET_FORMAT, "name": name, "files": {p.name: file_record(p) for p in files}}
    (path / PRESET_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return index


def read_preset_index(path: str | os.PathLike) -> dict:
    """The parsed ``preset.json`` of a preset directory, with its file list checked for shape."""
    path = Path(path)
    index_file = path / PRESET_FILE
    if not index_file.exists():
        raise IntegrityError(
            f"{path} is not a zoo preset: {PRESET_FILE} (the list of file hashes) is missing. A plain student "
            "folder loads with mfef_keras.student_dir.load_student_dir; `mfef zoo publish` makes a preset of a run.",
            file=str(index_file),
        )
    try:
        index = json.loads(read_regular(index_file))
        files = index["files"]
        records = {name: (str(rec["sha256"]), int(rec["size"])) for name, rec in files.items()}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise IntegrityError(f"{index_file} is damaged ({error}).", file=str(index_file)) from None
    for name in records:
        # A listed name with a separator could point the check at a file outside the preset.
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise IntegrityError(f"{index_file} lists a file outside the preset: {name!r}.", file=name)
    missing = [name for name in REQUIRED_FILES if name not in records]
    if missing:
        raise IntegrityError(f"{index_file} records no hash for {', '.join(missing)}.", file=missing[0])
    return index


def verify_preset(path: str | os.PathLike) -> dict:
    """Re-hash every file of a preset directory against its ``preset.json``; returns the index.

    Args:
        path: the preset directory.

    Raises:
        IntegrityError: a file is missing, unlisted, or has another size or sha256 than
            recorded; the message names the file, the expected and the actual hash.
    """
    path = Path(path)
    index = read_preset_index(path)
    for name, record in sorted(index["files"].items()):
        check_file(path / name, record["sha256"], int(record["size"]), label=f"{name} in preset {path}")
    unlisted = sorted(p.name for p in path.iterdir() if p.name != PRESET_FILE and p.name not in index["files"])
    if unlisted:
        raise IntegrityError(
            f"Preset {path} holds files that {PRESET_FILE} does not list: {', '.join(unlisted)}.", file=unlisted[0]
        )
    return index
