"""The model card (a preset's README.md), written from its `StudentCard`, and the command that reproduces it."""

from __future__ import annotations

import dataclasses
import shlex
from typing import TYPE_CHECKING

from mfef_keras.training.config import EXECUTION_KEYS, TrainConfig
from mfef_keras.zoo.study_figures import describe

if TYPE_CHECKING:
    # Only named in annotations: importing mfef_keras.zoo stays free of numpy (the card's DatasetInfo needs it).
    from mfef_keras.student_card import StudentCard

# `mfef train` flags are the config keys with dashes, except these.
_FLAGS = {
    "num_students": "--students",
    "learning_rate": "--lr",
    "student_weight_decay": "--student-wd",
    "fusion_weight_decay": "--fusion-wd",
    "method_options": "--method-option",
}


def reproduce_command(config: dict) -> str:
    """The ``mfef train`` command line that trains ``config`` again (every setting explicit, none left to defaults).

    Args:
        config: a training config dict (`TrainConfig.to_dict()`), as stored in run directories.
    """
    words = ["mfef", "train"]
    # In the config's own field order (dataset, backbone, method, ...), which reads better than the sorted JSON;
    # a key no longer a field would be a flag `mfef train` refuses.
    for key in (field.name for field in dataclasses.fields(TrainConfig)):
        value = config.get(key)
        if key in EXECUTION_KEYS or value is None:
            continue
        flag = _FLAGS.get(key, "--" + key.replace("_", "-"))
        if isinstance(value, bool):
            words.append(flag if value else f"--no-{flag[2:]}")
        elif key == "ablate":
            for part in value:
                words += [flag, str(part)]
        elif isinstance(value, dict):
            for name, option in value.items():
                words += [flag, f"{name}={option}"]
        elif isinstance(value, list):
            words += [flag, ",".join(str(v) for v in value)]
        else:
            words += [flag, str(value)]
    return shlex.join(words)


_TRAINING = {
    "mfef": "by online knowledge distillation with **MFEF**",
    "ffl": "by online knowledge distillation with **FFL**",
    "dml": "by online knowledge distillation with **DML**",
    "independent": "**independently** (the vanilla baseline, no distillation)",
}


# Rows of the card's training log; longer runs show evenly spaced epochs (metrics.csv holds them all).
LOG_ROWS = 30


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def _count(value: int | None, noun: str) -> str:
    """``"5,000-image split"``-style words, or just the noun when the count is unrecorded."""
    return noun if value is None else f"{value:,}-image {noun}"


def _splits(card: StudentCard) -> dict:
    # data.json's record of the run (publish copies it as ``data``) is what the run saw; the dataset entry of
    # older cards is the next best thing.
    return (card.data or {}).get("splits") or dict(card.dataset.splits or {})


def _validation_origin(dataset: str, splits: dict) -> str:
    """Where the validation images came from: held out of the training split, or shipped by the dataset."""
    # Imported here: validation_split needs numpy, and importing mfef_keras.zoo stays standard-library only.
    from mfef_keras.data.validation_split import holdout_size

    train, val = splits.get("train"), splits.get("val")
    if train is None or val is None:
        return "held out from the training images"
    if holdout_size(dataset, train + val) == val:
        return f"held out from the {train + val:,} training images"
    return "that the dataset ships"


def selection_rule(card: StudentCard) -> str:
    """How the preset's weights were chosen, in words, with the split sizes when the run recorded them.

    Args:
        card: the preset's card; its ``selection`` is ``validation``, ``test``, ``last_epoch`` or None (cards from
            before the validation split, whose epoch was chosen on the test split).
    """
    selection, splits = card.selection, _splits(card)
    chosen = "Epoch and student" if (card.num_students or 1) > 1 else "Epoch"
    test_split = _count(splits.get("test"), "test split")
    if selection == "validation":
        origin = _validation_origin(card.dataset.name, splits)
        return (
            f"{chosen} selected on the {_count(splits.get('val'), 'validation split')} {origin}; the {test_split} "
            "was used only for reporting."
        )
    if selection == "test":
        return f"{chosen} selected on the {test_split} itself (the papers' protocol, which flatters the number)."
    if selection == "last_epoch":
        return "The last epoch's weights of this student, selected on no split."
    if selection is None:
        return (
            f"{chosen} selected on the {test_split} (trained before the package held out a validation split, so "
            "the number is optimistic)."
        )
    return f"{chosen} selected by {selection!r}."


def _headline(card: StudentCard) -> str:
    """The test top-1 of these weights, with the epoch it was taken at and the last epoch's, for comparison."""
    epochs = (card.config or {}).get("epochs", "?")
    last = card.test_accuracy_last
    after = f"; {_percent(last)} after the last epoch" if last is not None else ""
    return (
        f"**Test top-1 accuracy: {_percent(card.test_accuracy)}** on the "
        f"{_count(_splits(card).get('test'), 'test split')} (weights of epoch {card.epoch or 0} of "
        f"{epochs}{after}). {selection_rule(card)}"
    )


def _trained_on(card: StudentCard) -> str:
    data = card.data or {}
    used, train = data.get("train_examples"), (data.get("splits") or {}).get("train")
    if used is None:
        return ""
    return f" on {used:,} training images" if used == train else f" on {used:,} of the {train:,} training images"


def _accuracy_table(metrics: dict, student_name: str) -> list[str]:
    # Imported here: run_directory needs numpy, and importing mfef_keras.zoo stays standard-library only.
    from mfef_keras.training.run_directory import summary_models

    # Students in index order, then the fused head and the ensemble (summary.json is stored sorted).
    models = sorted(summary_models(metrics), key=lambda m: (0, int(m[1:])) if m[1:].isdigit() else (1, m != "fused", m))
    # Summaries written before the validation split hold best/last test top-1 under other keys.
    validated = any("test_at_best" in metrics[m] for m in models)
    if validated:
        lines = [
            "| model | selected epoch | validation top-1 | test top-1 | test top-1, last epoch |",
            "|---|---|---|---|---|",
        ]
    else:
        lines = ["| model | best top-1 | at epoch | last top-1 |", "|---|---|---|---|"]
    for model in models:
        row = metrics[model]
        label = f"{model} (this preset's student)" if model == student_name else model
        if validated:
            cells = [row.get("best_epoch", 0), _percent(row.get("best_val")), _percent(row.get("test_at_best"))]
            cells.append(_percent(row.get("test_last")))
        else:
            cells = [_percent(row.get("best")), row.get("best_epoch", 0), _percent(row.get("last"))]
        lines.append(f"| {label} | {' | '.join(str(cell) for cell in cells)} |")
    return lines


def _logged_epochs(log: list[dict], selected: int, most: int) -> list[dict]:
    """At most about ``most`` rows of ``log``: evenly spaced epochs, always with the first, selected and last."""
    if len(log) <= most:
        return log
    step = -(-len(log) // most)
    keep = {0, len(log) - 1} | set(range(0, len(log), step))
    return [row for index, row in enumerate(log) if index in keep or row.get("epoch") == selected]


def _training_log(card: StudentCard, student: str, most: int = LOG_ROWS) -> list[str]:
    """Per epoch, this student's learning rate and top-1 on its training batches, the validation and the test split."""
    log = card.training_log or []
    if not log:
        return ["No training log was recorded."]
    # Logs from before the validation split have no test_ keys: their val_ accuracy was measured on the test split.
    splits = [("validation", "val"), ("test", "test")] if f"test_acc_{student}" in log[0] else [("test", "val")]
    selected = card.epoch
    lines = [
        "| epoch | learning rate | train top-1 | " + " | ".join(f"{split} top-1" for split, _ in splits) + " |",
        "|---" * (3 + len(splits)) + "|",
    ]
    for row in _logged_epochs(log, selected, most):
        epoch = f"**{row.get('epoch')}** (selected)" if row.get("epoch") == selected else str(row.get("epoch"))
        cells = [epoch, f"{row.get('lr', float('nan')):.4g}", _percent(row.get(f"acc_{student}"))]
        cells += [_percent(row.get(f"{prefix}_acc_{student}")) for _, prefix in splits]
        lines.append(f"| {' | '.join(cells)} |")
    shown = "every epoch" if len(log) <= most else f"{len(lines) - 2} of the {len(log)} epochs"
    lines = [f"Student {student}, {shown}; the train top-1 is measured on augmented training batches.", "", *lines]
    if card.training_log_file:
        lines += ["", f"`{card.training_log_file}`, in this preset, holds every loss and accuracy of every epoch."]
    return lines


def _study_section(card: StudentCard) -> list[str]:
    """What the study that trained this student found over seeds, beside this one seed's figure."""
    study = card.study
    if not study:
        return []
    lines = [
        "## Study",
        "",
        f"These weights are seed {card.seed} of a comparison study; one seed is one draw, the study's "
        f"figures over seeds are what to compare students by. This preset is the {describe(study, ' %')}. This "
        f"seed's own test top-1: {_percent(card.test_accuracy)}.",
    ]
    if study.get("command"):
        lines += ["", "The study (every method and seed, resumable), as it was run:", "", "```bash"]
        lines += [study["command"], "```"]
    return [*lines, ""]


def render_model_card(name: str, card: StudentCard) -> str:
    """The Markdown model card of preset ``name``.

    Args:
        name: the zoo name.
        card: the preset's card (see `mfef_keras.zoo.publish`).
    """
    dataset = card.dataset
    shape = "×".join(str(v) for v in dataset.image_shape)
    classes = list(dataset.class_names)
    shown = ", ".join(classes[:10]) + (", …" if len(classes) > 10 else "")
    config = card.config or {}
    width = f", base width {card.base_width}" if card.base_width else ""
    student = f"s{card.student_index or 0}"
    environment = card.environment or {}
    versions = ", ".join(f"{k} {v}" for k, v in sorted((environment.get("packages") or {}).items()))
    python = environment.get("python")
    training = _TRAINING.get(card.method, f"with method **{card.method}**")
    lines = [
        f"# {name}",
        "",
        f"An image classifier for **{dataset.name}** ({dataset.num_classes} classes, {shape} images): a "
        f"`{card.backbone}`{width} student ({student} of {card.num_students or '?'}, "
        f"{card.topology or 'independent'} topology) trained {training} "
        f"for {config.get('epochs', '?')} epochs{_trained_on(card)}, seed {card.seed}. "
        f"{card.params:,} parameters.",
        "",
        _headline(card),
        "",
        "## Load it",
        "",
        "```python",
        f'from mfef_keras.zoo import load_student; model = load_student("{name}", include_preprocessing=True)',
        "```",
        "",
        f"With `include_preprocessing=True` the model takes raw uint8 images (0–255) of shape {shape}; without it, "
        f"images already normalised as `(x / 255 - mean) / std` with mean {list(dataset.mean)} and std "
        f"{list(dataset.std)}. It returns logits for the classes {shown}. `model.mfef_metadata` holds this "
        f"card's data. `mfef zoo pull` downloads and verifies it (sha256 of every file); `mfef eval {name}` "
        "measures it on the test split again.",
        "",
        f"## Accuracy ({dataset.name})",
        "",
        *_accuracy_table(card.metrics or {}, student),
        "",
        "## Training log",
        "",
        *_training_log(card, student),
        "",
        *_study_section(card),
        "## Reproduce",
        "",
        "```bash",
        reproduce_command(config),
        "```",
        "",
        f"Experiment hash `{card.experiment_hash}`. Trained with {versions or 'unrecorded packages'}"
        f"{f', Python {python}' if python else ''}. Published {card.created}.",
        "",
        "## License",
        "",
        f"{card.license}",
        "",
    ]
    return "\n".join(lines)
