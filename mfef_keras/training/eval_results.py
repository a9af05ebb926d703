"""What `mfef eval` reports for any model: the scores of its logits and the files they are written to."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from mfef_keras._outputs import writing_to
from mfef_keras.atomic_files import write_json_atomic
from mfef_keras.training.plots import plot_confusion_matrix


def scores(labels: np.ndarray, logits: np.ndarray, class_names: list[str]) -> tuple[dict, np.ndarray]:
    """Top-1, top-k (k = 5, or the class count if smaller), per-class accuracy and the confusion matrix.

    Args:
        labels: ``(N,)`` integer labels.
        logits: ``(N, classes)`` model outputs.
        class_names: one name per class, in label order.

    Returns:
        The figures (``examples``, ``top1``, ``top<k>``, ``per_class_accuracy``, ``confusion_matrix``) and the
        confusion matrix as an array (rows: true class).
    """
    classes = len(class_names)
    k = min(5, classes)
    # A stable sort: equal logits rank by class index, the same on every run.
    top_k = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels, top_k[:, 0]), 1)
    per_class = {name: float(matrix[i, i] / max(1, matrix[i].sum())) for i, name in enumerate(class_names)}
    figures = {
        "examples": int(len(labels)),
        "correct": int(np.sum(top_k[:, 0] == labels)),
        "top1": float(np.mean(top_k[:, 0] == labels)),
        f"top{k}": float(np.mean((top_k == labels[:, None]).any(axis=1))),
        "per_class_accuracy": per_class,
        "confusion_matrix": matrix.tolist(),
    }
    return figures, matrix


def write_results(
    out: Path, results: dict, matrix: np.ndarray, class_names: list[str], title: str, normalize: bool
) -> None:
    """``metrics.json`` and ``confusion_matrix.png`` in ``out``, written aside and moved in together.

    Args:
        out: the folder to write them in (created if missing, removed again if the writing fails).
        results: the figures and what was evaluated, for ``metrics.json``.
        matrix: the confusion matrix, rows the true classes.
        class_names: one name per class, in label order.
        title: the figure's title.
        normalize: draw the rows as fractions of their true class.
    """
    created = not out.exists()
    with writing_to(out):
        out.mkdir(parents=True, exist_ok=True)
        try:
            with tempfile.TemporaryDirectory(prefix=".eval.partial-", dir=out) as staging:
                write_json_atomic(Path(staging) / "metrics.json", results)
                plot_confusion_matrix(matrix, class_names, Path(staging) / "confusion_matrix.png", title, normalize)
                for name in ("metrics.json", "confusion_matrix.png"):
                    os.replace(Path(staging) / name, out / name)
        finally:
            if created and not any(out.iterdir()):
                out.rmdir()
