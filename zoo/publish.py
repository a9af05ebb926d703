"""`publish`: a trained run's student packed as a zoo preset, its archive, hashes, manifest entry and model card."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from mfef_keras._regular_files import read_regular
from mfef_keras.atomic_files import staged_directory
from mfef_keras.model_files import METADATA_FILE, MODEL_FILE
from mfef_keras.zoo.archive import pack_preset
from mfef_keras.zoo.hashing import file_record
from mfef_keras.zoo.manifest import (
    MANIFEST_FILE,
    parse_name,
    read_manifest,
    shipped_manifest_path,
    write_manifest_entry,
)
from mfef_keras.zoo.model_card import render_model_card, reproduce_command
from mfef_keras.zoo.preset import (
    CARD_FILE,
    LOG_FILE,
    verify_preset,
    write_preset_index,
)
from mfef_keras.zoo.study_figures import study_record

if TYPE_CHECKING:
    # Only named in annotations: importing mfef_keras.zoo stays free of numpy (the card's DatasetInfo needs it).
    from mfef_keras.student_card import StudentCard


# Descriptive fields copied into the manifest, so `mfef zoo list` needs no download. Entries written before
# the validation split lack the selection and the figures beside it; readers take them as optional.
_LISTED = (
    "backbone",
    "base_width",
    "method",
    "num_students",
    "seed",
    "selection",
    "epoch",
    "validation_accuracy",
    "test_accuracy",
    "test_accuracy_last",
    "params",
    "license",
    "created",
    "experiment_hash",
    "study",
)


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(read_regular(path))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path.parent} is not a finished run directory: {what} {path.name} is missing."
        ) from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None


def _check_name(name: str, card: StudentCard) -> None:
    """Refuse a name whose architecture, method or dataset contradicts the student's card."""
    parts = parse_name(name)
    dataset = card.dataset.name
    actual = {"arch": str(card.backbone), "method": str(card.method)}
    # Folder datasets ("folder:/data/flowers") have no registry name; the name's dataset part is free then.
    if ":" not in dataset:
        actual["dataset"] = dataset
    wrong = [
        f"{part} {parts[part]!r} (the student's is {value!r})" for part, value in actual.items() if parts[part] != value
    ]
    if wrong:
        raise ValueError(f"Name {name!r} does not match the student: {'; '.join(wrong)}.")


def _data_record(run: Path) -> dict | None:
    """The split sizes and the training examples used, from the run's data.json (None for runs without one)."""
    path = run / "data.json"
    if not path.is_file():
        return None
    data = _read_json(path, "the data record")
    return {"splits": data.get("splits"), "train_examples": data.get("train_examples")}


def _last_epoch_accuracy(summary: dict, student: str) -> float | None:
    """The test top-1 of ``student`` after the last epoch (``last`` in summaries from before the validation split)."""
    row = summary.get(student, {})
    return row.get("test_last", row.get("last"))


def _preset_card(
    name: str, card: StudentCard, run: Path, source: Path, params: int, license: str, summary: dict, study: dict | None
) -> StudentCard:
    config = _read_json(run / "config.json", "the config")
    environment = _read_json(run / "environment.json", "the environment record")
    if card.experiment_hash != config.get("experiment_hash"):
        raise ValueError(
            f"Student {source} was trained by experiment {card.experiment_hash}, "
            f"but run {run} is experiment {config.get('experiment_hash')}."
        )
    dataset = card.dataset
    return card.updated(
        name=name,
        input={
            "shape": list(dataset.image_shape),
            "dtype": "float32",
            "normalization": "(x / 255 - mean) / std",
            "mean": list(dataset.mean),
            "std": list(dataset.std),
        },
        config=config["config"],
        experiment_hash=config["experiment_hash"],
        metrics=summary,
        test_accuracy_last=_last_epoch_accuracy(summary, f"s{card.student_index or 0}"),
        data=_data_record(run),
        reproduce=reproduce_command(config["config"]),
        training_log=_read_json(run / "metrics.json", "the metrics")["epochs"],
        training_log_file=LOG_FILE,
        environment={k: environment.get(k) for k in ("packages", "python", "platform", "command")},
        params=params,
        license=license,
        created=datetime.now(UTC).strftime("%Y-%m-%d"),
        published_from=str(source.relative_to(run)),
        study=study,
    )


def _is_deployed(summary: dict, student: str) -> bool:
    """Whether ``student`` is the run's deployed one (the best of its smallest students; a lone student is)."""
    return (summary.get("best_student") or {}).get("name", "s0") == student


def publish(
    run_dir: str | os.PathLike,
    name: str,
    out_dir: str | os.PathLike,
    license: str = "Apache-2.0",
    student: int | None = None,
    overwrite: bool = False,
    update_shipped_manifest: bool = False,
    base_url: str | None = None,
    study_dir: str | os.PathLike | None = None,
) -> Path:
    """Pack a run's best student (or student ``student``) as preset ``name``, with its archive and manifest entry.

    Writes ``out_dir/<name>/`` (model.keras as a plain Keras network, metadata.json, README.md, the run's
    metrics.csv, preset.json),
    ``out_dir/<name>.tar.gz`` and the manifest entry: in ``out_dir/manifest.json``, or
    in the package's shipped manifest with ``update_shipped_manifest`` (``out_dir`` must
    then lie inside the package's zoo folder).

    Args:
        run_dir: a finished run directory of `mfef train`.
        name: the zoo name, ``arch_method.dataset_tag`` (e.g. ``resnet8_mfef.digits_s0``);
            its architecture, method and dataset must be the student's.
        out_dir: where the preset and its archive go.
        license: the license of the weights.
        student: take ``students/s{student}`` instead of ``best_student``.
        overwrite: replace an existing preset, archive or manifest entry of that name.
        update_shipped_manifest: record the entry in the manifest that ships with the package.
        base_url: record the archive as ``<base_url>/<name>.tar.gz`` (where you will upload
            it) instead of by its path relative to the manifest.
        study_dir: the `mfef study` directory ``run_dir`` is a run of: the card and the manifest entry then
            carry the study's figures for this student over seeds (see `study_record`).

    Returns:
        The preset folder.
    """
    from mfef_keras.models.plain_keras import to_plain_keras
    from mfef_keras.training.model_source import resolve_model_source

    run, out_dir = Path(run_dir), Path(out_dir)
    parse_name(name)
    if not (run / "students").is_dir():
        raise ValueError(f"{run} is not a run directory (it has no students/ folder).")
    resolved = resolve_model_source(run, student)
    source, card = resolved.model_file.parent, resolved.card
    _check_name(name, card)

    manifest = shipped_manifest_path() if update_shipped_manifest else out_dir / MANIFEST_FILE
    target, archive = out_dir / name, out_dir / f"{name}.tar.gz"
    relative = os.path.relpath(archive.resolve(), manifest.parent.resolve())
    if base_url is None and relative.startswith(".."):
        raise ValueError(
            f"The archive must lie inside {manifest.parent} to be listed in {manifest}; "
            f"publish with an --out folder there (e.g. {manifest.parent / 'presets'})."
        )
    existing = [str(p) for p in (target, archive) if p.exists()]
    if name in read_manifest(manifest, missing_ok=True):
        existing.append(f"the entry in {manifest}")
    if existing and not overwrite:
        raise FileExistsError(
            f"Preset {name} exists already ({', '.join(existing)}); pass overwrite=True (--overwrite)."
        )

    if not (run / LOG_FILE).is_file():
        raise FileNotFoundError(f"{run} is not a finished run directory: the training log {LOG_FILE} is missing.")
    # Checked before the model loads: a run outside the study is refused at once.
    summary = _read_json(run / "summary.json", "the summary")
    deployed = _is_deployed(summary, f"s{card.student_index or 0}")
    study = None if study_dir is None else study_record(study_dir, run, deployed)
    model = resolved.load()
    preset_card = _preset_card(name, card, run, source, int(model.count_params()), license, summary, study)
    preset_metadata = preset_card.to_dict()
    # 0755 whatever the umask: the preset is meant to be shared.
    with staged_directory(target, mode=0o755) as staging:
        # Runs written before students were saved as plain Keras networks still hold the package's layers.
        to_plain_keras(model).save(staging / MODEL_FILE)
        (staging / METADATA_FILE).write_text(json.dumps(preset_metadata, indent=2, sort_keys=True, default=str) + "\n")
        (staging / CARD_FILE).write_text(render_model_card(name, preset_card))
        shutil.copyfile(run / LOG_FILE, staging / LOG_FILE)
        write_preset_index(staging, name)
        verify_preset(staging)
    pack_preset(target, archive)

    entry = {"url": f"{base_url.rstrip('/')}/{archive.name}"} if base_url else {"path": Path(relative).as_posix()}
    entry.update(file_record(archive))
    entry.update(
        dataset=card.dataset.name,
        num_classes=card.dataset.num_classes,
        image_shape=list(card.dataset.image_shape),
        **{key: preset_metadata.get(key) for key in _LISTED},
    )
    write_manifest_entry(manifest, name, entry)
    return target
