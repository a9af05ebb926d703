"""The model card (a preset's README.md), written from the preset's metadata, and the command that reproduces it."""

from __future__ import annotations

import dataclasses
import shlex

from mfef_keras.training.config import EXECUTION_KEYS, TrainConfig

# `mfef train` flags are the config keys with dashes, except these.
_FLAGS = {
    "num_students": "--students",
    "learning_rate": "--lr",
    "student_weight_decay": "--student-wd",
    "fusion_weight_decay": "--fusion-wd",
}


def reproduce_command(config: dict) -> str:
    """The ``mfef train`` command line that trains ``config`` again (every setting explicit, none left to defaults).

    Args:
        config: a training config dict (`TrainConfig.to_dict()`), as stored in run directories.
    """
    words = ["mfef", "train"]
    # The config's own field order (dataset, backbone, method, ...) reads better than the sorted JSON.
    order = [field.name for field in dataclasses.fields(TrainConfig)]
    for key, value in sorted(config.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order)):
        if key in EXECUTION_KEYS or value is None:
            continue
        flag = _FLAGS.get(key, "--" + key.replace("_", "-"))
        if isinstance(value, bool):
            words.append(flag if value else f"--no-{flag[2:]}")
        elif key == "ablate":
            for part in value:
                words += [flag, str(part)]
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


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


# How the preset's weights were chosen, by the metadata's ``selection``. Metadata without one predates the
# validation split: its epoch was chosen on the test split.
_SELECTION = {
    "validation": "the epoch of best accuracy on the validation split (held out from the training images); the "
    "test split played no part in choosing it",
    "test": "the epoch of best test accuracy (selected on the test split: the papers' protocol, which flatters "
    "the number)",
    "last_epoch": "the last epoch's weights",
    None: "the epoch of best test accuracy (selected on the test split: trained before the package held out a "
    "validation split, so the number is optimistic)",
}


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


def render_model_card(name: str, metadata: dict) -> str:
    """The Markdown model card of preset ``name``.

    Args:
        name: the zoo name.
        metadata: the preset's metadata (see `mfef_keras.zoo.publish`).
    """
    dataset = metadata["dataset"]
    shape = "×".join(str(v) for v in dataset["image_shape"])
    classes = dataset["class_names"]
    shown = ", ".join(classes[:10]) + (", …" if len(classes) > 10 else "")
    config = metadata.get("config", {})
    width = f", base width {metadata['base_width']}" if metadata.get("base_width") else ""
    student = f"s{metadata.get('student_index', 0)}"
    packages = metadata.get("environment", {}).get("packages", {})
    versions = ", ".join(f"{k} {v}" for k, v in sorted(packages.items()))
    python = metadata.get("environment", {}).get("python")
    training = _TRAINING.get(metadata["method"], f"with method **{metadata['method']}**")
    lines = [
        f"# {name}",
        "",
        f"An image classifier for **{dataset['name']}** ({dataset['num_classes']} classes, {shape} images): a "
        f"`{metadata['backbone']}`{width} student ({student} of {metadata.get('num_students', '?')}, "
        f"{metadata.get('topology', 'independent')} topology) trained {training} "
        f"for {config.get('epochs', '?')} epochs, seed {metadata.get('seed')}. "
        f"{metadata['params']:,} parameters. Test top-1 accuracy of these weights: "
        f"**{_percent(metadata.get('test_accuracy'))}** (epoch {metadata.get('epoch', 0)}: "
        f"{_SELECTION.get(metadata.get('selection'), metadata.get('selection'))}).",
        "",
        "## Load it",
        "",
        "```python",
        f'from mfef_keras.zoo import load_student; model = load_student("{name}", include_preprocessing=True)',
        "```",
        "",
        f"With `include_preprocessing=True` the model takes raw uint8 images (0–255) of shape {shape}; without it, "
        f"images already normalised as `(x / 255 - mean) / std` with mean {list(dataset['mean'])} and std "
        f"{list(dataset['std'])}. It returns logits for the classes {shown}. `model.mfef_metadata` holds this "
        "card's data. `mfef zoo pull` downloads and verifies it (sha256 of every file).",
        "",
        f"## Accuracy ({dataset['name']} test split)",
        "",
        *_accuracy_table(metadata.get("metrics", {}), student),
        "",
        "## Reproduce",
        "",
        "```bash",
        reproduce_command(config),
        "```",
        "",
        f"Experiment hash `{metadata.get('experiment_hash')}`. Trained with {versions or 'unrecorded packages'}"
        f"{f', Python {python}' if python else ''}. Published {metadata.get('created')}.",
        "",
        "## License",
        "",
        f"{metadata['license']}",
        "",
    ]
    return "\n".join(lines)
