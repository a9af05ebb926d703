"""`evaluate_student`: top-1 / top-5 accuracy and a confusion matrix for a saved student."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from mfef_keras._outputs import check_output_dir
from mfef_keras.student_card import StudentCard
from mfef_keras.training.eval_results import scores, write_results
from mfef_keras.training.model_source import ModelSource, resolve_model_source


def _default_out(source: str, resolved: ModelSource) -> Path:
    if resolved.kind == "zoo":
        # The preset lives in the verified cache, which must hold nothing but the preset.
        return Path(f"{Path(source).name}-eval")
    if resolved.kind == "keras":
        return resolved.model_file.parent / f"{resolved.model_file.stem}-eval"
    if resolved.kind == "unfinished_run":
        # Not inside best_student/: its trainer replaces that folder whenever a better epoch comes.
        return resolved.model_file.parent.parent / "eval"
    return resolved.model_file.parent / "eval"


def evaluate_student(
    source: str,
    dataset: str | None = None,
    data_dir: str | None = None,
    student: int | None = None,
    out_dir: str | None = None,
    batch_size: int = 100,
    normalize: bool = False,
    note: Callable[[str], None] | None = None,
) -> dict:
    """Evaluate a run's best student (or student ``student``), a student directory, a zoo preset or a ``.keras`` file.

    Writes ``metrics.json`` and ``confusion_matrix.png`` to ``out_dir`` (default: an ``eval`` folder
    beside the student, or ``NAME-eval`` in the working directory for a zoo preset) and returns the
    metrics. Both are written aside and moved into place together, so a failure (a full disk...)
    leaves no half-written results.

    Args:
        source: anything `resolve_model_source` takes.
        dataset: dataset to evaluate on (default: the one the student was trained on).
        data_dir: dataset location.
        student: student index within a run directory.
        out_dir: where to write the results.
        batch_size: evaluation batch size.
        normalize: draw the confusion matrix's rows as fractions of their true class (``metrics.json``
            keeps the counts).
        note: told where the results go when that is the working directory (a zoo preset without ``out_dir``), and
            that a run still training gives its best student so far.
    """
    from mfef_keras.data import dataset_info, make_dataset

    resolved = resolve_model_source(source, student)
    out = check_output_dir(out_dir or _default_out(source, resolved))
    if note and resolved.note:
        note(resolved.note)
    if note and not out_dir and resolved.kind == "zoo":
        note(f"note: writing the results to {out.resolve()} (the zoo cache holds presets only); --out chooses.")
    model, card = resolved.load(), resolved.card
    dataset = dataset or (card.dataset.name if card else None)
    if not dataset:
        raise ValueError(f"{source} carries no dataset metadata; pass --dataset.")
    info = dataset_info(dataset, data_dir)
    expected = tuple(model.inputs[0].shape[1:])
    if expected != tuple(info.image_shape):
        raise ValueError(f"The student takes images of shape {expected}; dataset {dataset!r} has {info.image_shape}.")
    classes = int(model.outputs[0].shape[-1])
    if classes != info.num_classes:
        raise ValueError(f"The student predicts {classes} classes; dataset {dataset!r} has {info.num_classes}.")

    labels, logits = [], []
    for images, batch_labels in make_dataset(dataset, "test", batch_size, training=False, data_dir=data_dir):
        logits.append(np.asarray(model.predict_on_batch(images)))
        labels.append(np.asarray(batch_labels))
    labels, logits = np.concatenate(labels), np.concatenate(logits)
    figures, matrix = scores(labels.reshape(-1), logits, list(info.class_names))
    results = {"source": str(source), "dataset": dataset, **figures}
    title = f"{_model_label(source, card)} on {dataset} test"
    write_results(out, results, matrix, list(info.class_names), title, normalize)
    results["out_dir"] = str(out)
    return results


def _model_label(source: str, card: StudentCard | None) -> str:
    """The evaluated model as a figure title names it: SOURCE, with its student, backbone and method when known."""
    parts = Path(source).parts
    # A long absolute path would run off the figure; its last two parts still say which run it is.
    shown = str(source) if len(str(source)) <= 50 else str(Path("…", *parts[-2:]))
    if card is None:
        return shown
    student = None if card.student_index is None else f"s{card.student_index}"
    known = [part for part in (student, card.backbone, card.method) if part]
    return f"{shown} ({', '.join(known)})" if known else shown
