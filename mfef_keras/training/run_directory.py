"""The run directory: resolved config, environment, per-epoch metrics and the summary of a run."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from mfef_keras._regular_files import NotARegularFile, read_regular, refuse_linked_folder
from mfef_keras.atomic_files import write_bytes_atomic, write_json_atomic
from mfef_keras.training.config import EXECUTION_KEYS, TrainConfig

CONFIG_FILE = "config.json"
DATA_FILE = "data.json"
METRICS_FILE = "metrics.json"
# Held by the trainer that owns the run directory (see `run_lock`).
LOCK_FILE = ".train.lock"
# `atomic_files`' temporary files (.<name>.<8 random characters>.tmp) and staging folders
# (.<name>.<8 random characters>), as tempfile names them.
_LEFTOVER = re.compile(r"\..+\.[a-z0-9_]{8}(\.tmp)?")
# Where a run writes through those helpers: the run directory and its students/.
_LEFTOVER_PLACES = (".", "students")


class RunDirectoryError(ValueError):
    """A run directory that cannot be used for this configuration."""


def check_run_dir(path: Path, config: TrainConfig, extends: bool = False) -> bool:
    """Refuse a run directory that is not writable or holds another experiment; True if it already exists.

    Args:
        path: the run directory.
        config: the run's configuration.
        extends: ``config`` is the `extended_config` of the run there, which differs from it by design.
    """
    path = Path(path)
    try:
        # Before anything else: the checks below, and os.walk in `_refuse_links`, would follow it.
        refuse_linked_folder(path, fix="Give the folder it points at, or another --run-dir.")
    except NotARegularFile as link:
        raise RunDirectoryError(f"Run directory {link}") from None
    if path.exists():
        if not path.is_dir():
            raise RunDirectoryError(f"Run directory {path} exists and is not a directory.")
        if (path / CONFIG_FILE).exists():
            changed = [] if extends else config_differences(path, config)
            if changed:
                raise RunDirectoryError(
                    f"Run directory {path} belongs to a different configuration (differs in: {', '.join(changed)}). "
                    "Choose another --run-dir, or delete that directory to start over."
                )
        elif any(entry.name != LOCK_FILE and not _is_leftover(entry) for entry in path.iterdir()):
            raise RunDirectoryError(f"{path} is not empty and is not a run directory (no {CONFIG_FILE}).")
        if not os.access(path, os.W_OK):
            raise RunDirectoryError(f"Run directory {path} is not writable.")
        _refuse_links(path)
        return True
    parent = next((p for p in path.parents if p.exists()), Path("."))
    if not os.access(parent, os.W_OK):
        raise RunDirectoryError(f"Cannot create run directory {path}: {parent} is not writable.")
    return False


def _refuse_links(path: Path) -> None:
    """Refuse a symbolic link anywhere inside run directory ``path``.

    A run directory may come from a download or a shared disk: a link there (``students -> ~``, say) would
    make the trainer write, replace or delete files wherever it points.
    """
    for folder, folders, files in os.walk(path):
        for name in (*folders, *files):
            entry = Path(folder) / name
            if entry.is_symlink():
                raise RunDirectoryError(
                    f"Run directory {path} holds a symbolic link, {entry} (to {os.readlink(entry)}); mfef does not "
                    "write through links, which could point at any file. Remove the link, or choose another --run-dir."
                )


def read_run_json(file: Path) -> dict:
    """The JSON object in ``file``, a file of a run directory.

    Raises:
        RunDirectoryError: the file is not a JSON object (cut short, or edited by hand); the message names it.
    """
    try:
        data = json.loads(read_regular(file))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        problem = f"is not valid JSON ({error})"
    else:
        if isinstance(data, dict):
            return data
        problem = f"holds a {type(data).__name__}, not a JSON object"
    raise RunDirectoryError(
        f"{file} {problem}, so the run in {file.parent} cannot be checked or resumed. Restore the file, "
        "or delete that directory to start over, or choose another --run-dir."
    )


def _is_leftover(entry: Path) -> bool:
    return _LEFTOVER.fullmatch(entry.name) is not None and (entry.is_dir() or entry.name.endswith(".tmp"))


def sweep_leftovers(path: Path) -> list[Path]:
    """Remove the temporary files and staging folders that a killed or failed run left in run directory ``path``.

    Only its owner may call this (see `run_lock`): another writer's files in progress look the same.

    Args:
        path: the run directory.

    Returns:
        What was removed.
    """
    removed = []
    for place in _LEFTOVER_PLACES:
        folder = Path(path) / place
        entries = sorted(folder.iterdir()) if folder.is_dir() else []
        for entry in filter(_is_leftover, entries):
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    return removed


def _differences(stored: dict, config: TrainConfig) -> list[str]:
    """The keys of what a run computes in which ``stored`` (a run's config.json) differs from ``config``.

    The stored values pass through `TrainConfig` first, so a run written before a value's spelling or type
    was normalised (``80`` for ``80.0``) still counts as the same experiment.
    """
    try:
        stored = TrainConfig(**stored).to_dict()
    except (TypeError, ValueError):
        pass
    current = config.to_dict()
    return sorted(
        k for k in stored.keys() | current.keys() if k not in EXECUTION_KEYS and stored.get(k) != current.get(k)
    )


def extended_config(path: Path, config: TrainConfig) -> TrainConfig | None:
    """``config`` as the extension of the run in ``path`` to more epochs, or None if it is not one.

    A run (finished or stopped) whose stored configuration differs from ``config`` in its epochs alone, fewer
    than ``config``'s, is extended: it goes on from its last epoch with the schedule it had, so ``config`` keeps
    the stored run's `TrainConfig.schedule_span` (the LR milestones and ramp-up of the shorter run; the added
    epochs train at its last rate). The same holds for an extension that was interrupted.

    Raises:
        RunDirectoryError: the run to extend anneals with a cosine schedule, whose rate has reached 0.
    """
    config_file = Path(path) / CONFIG_FILE
    if not config_file.exists():
        return None
    stored = read_run_json(config_file).get("config", {})
    try:
        previous = TrainConfig(**stored)
    except (TypeError, ValueError):
        return None
    changed = set(_differences(stored, config))
    if not changed or changed - {"epochs", "schedule_epochs"} or config.epochs < previous.epochs:
        return None
    if config.lr_schedule == "cosine":
        raise RunDirectoryError(
            f"Run directory {path} annealed its learning rate to 0 over {previous.schedule_span} epochs (cosine): "
            "it cannot be extended to more. Train a new run with --epochs "
            f"{config.epochs}, or use --lr-schedule step."
        )
    return dataclasses.replace(config, schedule_epochs=previous.schedule_span)


def config_differences(path: Path, config: TrainConfig) -> list[str]:
    """The keys of what a run computes in which run directory ``path``'s stored config differs from ``config``.

    Empty when they agree, and for a directory with no config.json (nothing trained there yet).

    Args:
        path: a run directory.
        config: the configuration the run is expected to have.
    """
    config_file = Path(path) / CONFIG_FILE
    if not config_file.exists():
        return []
    stored = read_run_json(config_file)
    if stored.get("experiment_hash") == config.experiment_hash():
        return []
    return _differences(stored.get("config", {}), config)


def write_config(path: Path, config: TrainConfig) -> None:
    write_json_atomic(
        Path(path) / CONFIG_FILE, {"experiment_hash": config.experiment_hash(), "config": config.to_dict()}
    )


def data_fingerprint(info, train_examples: int) -> dict:
    """What a run's checkpoint depends on in its data: classes, split sizes, image shape, normalisation.

    Args:
        info: the dataset's `DatasetInfo`.
        train_examples: training examples the run uses (the train split, or ``train_limit`` of it).
    """
    data = info.to_dict()
    return {
        "class_names": data["class_names"],
        "splits": data["splits"],
        "train_examples": train_examples,
        "image_shape": data["image_shape"],
        "mean": data["mean"],
        "std": data["std"],
    }


def write_data_fingerprint(path: Path, fingerprint: dict) -> None:
    """Record ``fingerprint`` (see `data_fingerprint`) in the run directory ``path``."""
    write_json_atomic(Path(path) / DATA_FILE, fingerprint)


def check_data_fingerprint(path: Path, fingerprint: dict) -> None:
    """Refuse to resume the run in ``path`` if its data differs from the data it was started on.

    Args:
        path: the run directory.
        fingerprint: `data_fingerprint` of the data now.

    Raises:
        RunDirectoryError: naming each change, e.g. ``train split: 1437 -> 2874 images``.
    """
    file = Path(path) / DATA_FILE
    if not file.exists():
        return
    stored = read_run_json(file)
    splits = stored.get("splits", {})
    changes = [
        f"{split} split: {splits.get(split, 0)} -> {fingerprint['splits'].get(split, 0)} images"
        for split in sorted(set(splits) | set(fingerprint["splits"]))
        if splits.get(split) != fingerprint["splits"].get(split)
    ]
    labels = {
        "train_examples": "training examples used",
        "class_names": "classes",
        "image_shape": "image shape",
        "mean": "normalisation mean",
        "std": "normalisation std",
    }
    changes += [
        f"{label}: {stored.get(key)} -> {fingerprint[key]}"
        for key, label in labels.items()
        if stored.get(key) != fingerprint[key]
    ]
    if changes:
        raise RunDirectoryError(
            f"Run directory {path} was started on different data ({'; '.join(changes)}), so its checkpoint "
            "cannot be resumed. Restore the data, or choose another --run-dir, or delete that directory to start over."
        )


def write_metrics(path: Path, history: list[dict]) -> None:
    """``metrics.json`` and ``metrics.csv``: one row per epoch (``epoch`` from 1) with every loss term and accuracy."""
    path = Path(path)
    # The rate is read back from a float32 optimiser variable, computed in float32 (0.1 x 0.1 = 0.010000001):
    # float32 holds about 7 significant digits, so 6 give the rate that was set (0.1, not 0.10000000149011612).
    history = [{**row, "lr": float(f"{row['lr']:.6g}")} if "lr" in row else row for row in history]
    write_json_atomic(path / METRICS_FILE, {"epochs": history})
    columns = ["epoch", "lr", "time_s"]
    columns += sorted({k for row in history for k in row} - set(columns))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    write_bytes_atomic(path / "metrics.csv", buffer.getvalue().encode())


# How each `TrainConfig.selection` is told in summary.json and on the console.
SELECTION_LABELS = {
    "validation": "selected on the validation split",
    "test": "selected on the test split (papers' protocol)",
}
# The metrics prefix of the split each selection picks on.
_SELECTION_PREFIX = {"validation": "val", "test": "test"}


def summarize(
    history: list[dict],
    num_students: int,
    has_fused: bool,
    selection: str = "validation",
    deployable: Sequence[int] | None = None,
) -> dict:
    """Per model of a run: the selected epoch (from 1), its validation and test accuracy, and the last test accuracy.

    The epoch is the argmax of the ``selection`` split's accuracy (ties to the later epoch); so is the best
    student among the ``deployable`` students, whose names (``chosen_from``) and the ``reason`` it was chosen
    the best student records. ``best_val`` is the validation accuracy at that epoch (the best one when
    selecting on validation).

    Args:
        history: metrics rows with ``val_acc_<model>`` (validation split) and ``test_acc_<model>`` (test split).
        num_students: students of the run.
        has_fused: whether the run has a fused head.
        selection: ``"validation"`` or ``"test"`` (the papers' protocol), see `TrainConfig`.
        deployable: the indices of the students the best one is chosen from (the smallest of a mixed cohort);
            None: all.
    """
    prefix = _SELECTION_PREFIX[selection]
    models = [f"s{i}" for i in range(num_students)] + (["fused"] if has_fused else []) + ["ensemble"]
    summary: dict = {"selection": selection, "selection_label": SELECTION_LABELS[selection]}
    for model in models:
        key = f"{prefix}_acc_{model}"
        # Ties go to the later epoch: same accuracy after more training.
        best = max(history, key=lambda row: (row[key], row["epoch"]))
        summary[model] = {
            "best_val": best[f"val_acc_{model}"],
            "best_epoch": best["epoch"],
            "test_at_best": best[f"test_acc_{model}"],
            "test_last": history[-1][f"test_acc_{model}"],
        }
    candidates = range(num_students) if deployable is None else deployable
    scores = {f"s{i}": _selection_score(summary[f"s{i}"], selection) for i in candidates}
    best_student = max(scores, key=lambda s: (scores[s], summary[s]["best_epoch"]))
    split = "validation" if selection == "validation" else "test"
    among = "the students" if len(scores) == num_students else "the students with the fewest parameters"
    summary["best_student"] = {
        "name": best_student,
        **summary[best_student],
        "chosen_from": list(scores),
        "reason": f"the best by {split} top-1 of {among} ({', '.join(scores)})",
    }
    return summary


def _selection_score(row: dict, selection: str) -> float:
    return row["best_val"] if selection == "validation" else row["test_at_best"]


def summary_models(summary: dict) -> list[str]:
    """The model names of a summary.json (students, fused head, ensemble), without its other entries."""
    return [key for key, value in summary.items() if key != "best_student" and isinstance(value, dict)]


def format_summary(summary: dict) -> str:
    """The end-of-run table: per model the selected epoch, its validation and test top-1, and the last test top-1."""
    lines = [
        f"{'model':<10}{'epoch':>7}{'val top-1':>11}{'test top-1':>12}{'test last':>11}",
    ]
    for model in summary_models(summary):
        row = summary[model]
        lines.append(
            f"{model:<10}{row['best_epoch']:>7}{100 * row['best_val']:>10.2f}%{100 * row['test_at_best']:>11.2f}%"
            f"{100 * row['test_last']:>10.2f}%"
        )
    best = summary["best_student"]
    lines.append(
        f"best student: {best['name']}, epoch {best['best_epoch']} (validation {100 * best['best_val']:.2f}%, "
        f"test {100 * best['test_at_best']:.2f}%); epochs and student {summary['selection_label']}"
    )
    return "\n".join(lines)
