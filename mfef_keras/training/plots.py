"""PNG figures of a run: training curves and confusion matrices."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_curves(history: list[dict], path: Path) -> Path:
    """Loss terms (train) and accuracies (test) per epoch, side by side."""
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for key in sorted(history[0]):
        if key == "loss" or (key.startswith(("ce_", "kd_")) and key != "kd_weight"):
            left.plot(epochs, [row[key] for row in history], label=key, lw=2 if key == "loss" else 1)
        if key.startswith("val_acc_"):
            right.plot(epochs, [100 * row[key] for row in history], label=key[len("val_acc_") :])
    left.set(title="training loss terms", xlabel="epoch", yscale="log")
    right.set(title="test top-1 accuracy (%)", xlabel="epoch")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_confusion_matrix(matrix: np.ndarray, class_names: list[str], path: Path, title: str) -> Path:
    """A confusion matrix heat map (rows: true class, columns: predicted), with counts when small."""
    plt = _pyplot()
    n = len(class_names)
    size = min(4 + 0.35 * n, 20)
    fig, axis = plt.subplots(figsize=(size, size))
    image = axis.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=axis, fraction=0.046)
    if n <= 30:
        axis.set_xticks(range(n), class_names, rotation=90)
        axis.set_yticks(range(n), class_names)
        threshold = matrix.max() / 2
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    color = "white" if matrix[i, j] > threshold else "black"
                    axis.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7, color=color)
    axis.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
