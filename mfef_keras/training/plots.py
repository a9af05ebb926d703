"""PNG figures: a run's training curves, a student's confusion matrix, a study's comparison, verdict and convergence.

Each ``*_figure`` function builds a Matplotlib figure from plain data, so tests can inspect what a
person will see; the matching ``plot_*`` function saves it as a PNG and closes it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mfef_keras.atomic_files import write_bytes_atomic
from mfef_keras.training.study_significance import corrected_cells

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# One colour per model in every figure, so s0 in the loss panel is s0 in the accuracy panel and in a study.
MODEL_COLORS = {
    "deployed": "navy",
    "peer": "tab:olive",
    "students": "tab:gray",
    "fused": "tab:red",
    "ensemble": "tab:purple",
}
_STUDENT_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
# The models a study compares, in the order they are drawn; a variant shows only those it has.
STUDY_MODELS = ("deployed", "peer", "students", "fused", "ensemble")
# Line styles of a study's cohorts in its convergence figure, in the order the cohorts come.
_COHORT_STYLES = ("-", "--", ":", "-.")
# Below this many points per epoch (~pixels at 100 dpi) markers would merge into a thick line.
_MARKERS_UP_TO_EPOCHS = 40
# Tick labels smaller than this are unreadable; thinning them is better than shrinking them further.
_MIN_TICK_FONT = 6.0
# Above this many classes a count per cell no longer fits in its cell.
MAX_ANNOTATED_CLASSES = 20


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def model_color(model: str) -> str:
    """The colour of ``model`` (``s0``, ``s1``..., ``fused``, ``ensemble`` or ``students``) in every figure.

    Args:
        model: a model name as in history keys (``val_acc_<model>``) and study rows.
    """
    if model in MODEL_COLORS:
        return MODEL_COLORS[model]
    if model.startswith("s") and model[1:].isdigit():
        return _STUDENT_COLORS[int(model[1:]) % len(_STUDENT_COLORS)]
    raise ValueError(f"No colour for model {model!r}: expected s<N>, {', '.join(MODEL_COLORS)}.")


def _save(fig: Figure, path: Path) -> Path:
    # Through `write_bytes_atomic`: savefig opens the path itself, which would follow a link planted there.
    plt = _pyplot()
    png = io.BytesIO()
    try:
        fig.savefig(png, format="png", dpi=100)
    finally:
        plt.close(fig)
    write_bytes_atomic(path, png.getvalue())
    return path


def training_curves_figure(history: list[dict]) -> Figure:
    """Loss (train terms, total train, validation and test) and validation and test accuracy per epoch.

    Accuracy: validation solid, test dashed, one colour per model.

    Args:
        history: one row per epoch, as a run's metrics: ``epoch`` (plotted as given), ``loss``, ``val_loss``,
            ``test_loss``, ``ce_<model>`` / ``kd_<model>`` loss terms and ``val_acc_<model>`` (validation split)
            and ``test_acc_<model>`` (test split) accuracies (fractions).
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    epochs = [int(row["epoch"]) for row in history]
    keys = history[0].keys()
    models = [key[len("val_acc_") :] for key in keys if key.startswith("val_acc_")]
    marker = "o" if len(epochs) <= _MARKERS_UP_TO_EPOCHS else None
    fig, (loss_axis, acc_axis) = plt.subplots(1, 2, figsize=(12, 5.5))

    def column(key: str) -> list[float]:
        return [row[key] for row in history]

    loss_axis.plot(epochs, column("loss"), color="black", lw=2, marker=marker, ms=3, label="total (train)")
    for key, style, split in (("val_loss", "--", "validation"), ("test_loss", ":", "test")):
        if key in keys:
            loss_axis.plot(
                epochs, column(key), color="black", lw=2, ls=style, marker=marker, ms=3, label=f"total ({split})"
            )
    for model in models:
        color = model_color(model)
        for term, style in (("ce", "-"), ("kd", ":")):
            if f"{term}_{model}" in keys:
                loss_axis.plot(
                    epochs, column(f"{term}_{model}"), color=color, ls=style, lw=1.2, label=f"{model} {term.upper()}"
                )
        for prefix, style, split in (("val", "-", "val"), ("test", "--", "test")):
            accuracy = [100 * value for value in column(f"{prefix}_acc_{model}")]
            acc_axis.plot(
                epochs, accuracy, color=color, ls=style, lw=1.5, marker=marker, ms=3, label=f"{model} ({split})"
            )

    loss_axis.set(title="loss per epoch", ylabel="loss (log scale)", yscale="log")
    acc_axis.set(title="accuracy per epoch", ylabel="top-1 accuracy (%): validation solid, test dashed")
    for axis in (loss_axis, acc_axis):
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        axis.grid(alpha=0.3)
        # Below the panel, not on it: a legend inside would cover the curves at some epoch.
        handles = axis.get_legend_handles_labels()[0]
        axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=min(4, len(handles)), fontsize=8)
    fig.tight_layout()
    return fig


def plot_training_curves(history: list[dict], path: Path) -> Path:
    """Save `training_curves_figure` of ``history`` as the PNG ``path``.

    Args:
        history: a run's per-epoch rows (see `training_curves_figure`).
        path: the PNG to write.
    """
    return _save(training_curves_figure(history), path)


def _tick_layout(num_classes: int, axes_inches: float) -> tuple[float, int]:
    """(font size, label every n-th class) so that neighbouring class labels do not overlap."""
    # A label needs about 1.25 times its font size; the 0.8 leaves a gap between neighbours.
    cell_points = 72 * axes_inches / num_classes
    font = min(10.0, 0.8 * cell_points)
    if font >= _MIN_TICK_FONT:
        return font, 1
    return _MIN_TICK_FONT, math.ceil(_MIN_TICK_FONT / (0.8 * cell_points))


def confusion_matrix_figure(
    matrix: np.ndarray, class_names: Sequence[str], title: str, normalize: bool = False
) -> Figure:
    """A confusion matrix heat map (rows: true class, columns: predicted) titled with its top-1 accuracy.

    Up to `MAX_ANNOTATED_CLASSES` classes each cell shows its count (or fraction); beyond, the colours alone
    do, and class labels are thinned to stay readable.

    Args:
        matrix: ``(classes, classes)`` counts.
        class_names: one name per class.
        title: what was evaluated on what, e.g. ``"run-3 best student (s1) on cifar10 test"``.
        normalize: show each row as fractions of its true class (rows sum to 1) instead of counts.
    """
    plt = _pyplot()
    counts = np.asarray(matrix)
    n = len(class_names)
    total = int(counts.sum())
    accuracy = np.trace(counts) / max(1, total)
    values = counts / np.maximum(1, counts.sum(axis=1, keepdims=True)) if normalize else counts
    side = float(np.clip(3 + 0.25 * n, 6, 18))
    # Titles grow with the figure so that, shrunk to fit a screen, a 100-class matrix still reads.
    label_font = float(np.clip(0.8 * side, 10, 14))
    fig, axis = plt.subplots(figsize=(side, side))
    image = axis.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    colorbar = fig.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    colorbar.set_label("fraction of the true class" if normalize else "images", fontsize=label_font)
    # The axes take about three quarters of the figure once labels and colour bar have their room.
    font, step = _tick_layout(n, 0.75 * side)
    shown = range(0, n, step)
    axis.set_xticks(shown, [class_names[i] for i in shown], rotation=90, fontsize=font)
    axis.set_yticks(shown, [class_names[i] for i in shown], fontsize=font)
    if n <= MAX_ANNOTATED_CLASSES:
        threshold = values.max() / 2
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    text = f"{values[i, j]:.2f}" if normalize else str(int(values[i, j]))
                    color = "white" if values[i, j] > threshold else "black"
                    axis.text(j, i, text, ha="center", va="center", fontsize=min(10.0, font), color=color)
    rows = ", rows normalised" if normalize else ""
    axis.set_xlabel("predicted class", fontsize=label_font)
    axis.set_ylabel("true class", fontsize=label_font)
    axis.set_title(f"{title}\ntop-1 accuracy {100 * accuracy:.2f}% ({total} images{rows})", fontsize=label_font)
    fig.tight_layout()
    return fig


def plot_confusion_matrix(
    matrix: np.ndarray, class_names: Sequence[str], path: Path, title: str, normalize: bool = False
) -> Path:
    """Save `confusion_matrix_figure` as the PNG ``path``.

    Args:
        matrix: ``(classes, classes)`` counts (rows: true class).
        class_names: one name per class.
        path: the PNG to write.
        title: what was evaluated on what; the accuracy is added.
        normalize: rows as fractions of their true class.
    """
    return _save(confusion_matrix_figure(matrix, class_names, title, normalize), path)


def study_figure(rows: list[dict], setting: str) -> Figure:
    """Dot plot of each variant's test top-1 at the selected epoch per model, with its 95 % t-interval over seeds.

    One line per (variant, model) the study has, so a method without a fused head leaves no gap; the
    accuracy axis is zoomed to the data, which the intervals make safe to read. When some row has a paired
    difference to the independent baseline, a second panel on the same lines shows it with its 95 % interval
    around a zero line: a filled dot and a * where the interval excludes zero, a hollow dot where it does not.

    Args:
        rows: `mfef_keras.training.study.aggregate` rows: ``variant``, ``model``, ``test_at_best_mean`` (%),
            ``test_at_best_ci95`` (half-width in points, None for a single seed) and ``diff_vs_independent_mean``,
            ``diff_vs_independent_ci95`` (points) and ``diff_vs_independent_significant`` (None where not paired).
        setting: the study's data, backbone, epochs and seeds, shown in the title.
    """
    plt = _pyplot()
    variants = list(dict.fromkeys(row["variant"] for row in rows))
    by_key = {(row["variant"], row["model"]): row for row in rows}
    lines = [(v, m) for v in variants for m in STUDY_MODELS if (v, m) in by_key]
    paired = any(by_key[key]["diff_vs_independent_mean"] is not None for key in lines)
    height = 1.6 + 0.32 * len(lines)
    if paired:
        fig, (axis, diff_axis) = plt.subplots(
            1, 2, figsize=(13, height), sharey=True, gridspec_kw={"width_ratios": (3, 2)}
        )
    else:
        fig, axis = plt.subplots(figsize=(8, height))
    _accuracy_panel(axis, by_key, lines)
    axis.set_yticks(range(len(lines)), [f"{variant} · {model}" for variant, model in lines])
    axis.set_ylim(len(lines) - 0.5, -0.5)
    if paired:
        _difference_panel(diff_axis, by_key, lines)
    fig.suptitle(setting)
    # tight_layout leaves the suptitle out of its sums: keep 0.3 inch above the panels' titles for it.
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / height))
    return fig


def _separate_variants(axis: Axes, lines: list[tuple[str, str]]) -> None:
    for y in range(1, len(lines)):
        if lines[y][0] != lines[y - 1][0]:
            axis.axhline(y - 0.5, color="0.8", lw=0.8)


def _accuracy_panel(axis: Axes, by_key: dict[tuple[str, str], dict], lines: list[tuple[str, str]]) -> None:
    for model in STUDY_MODELS:
        ys = [y for y, key in enumerate(lines) if key[1] == model]
        if not ys:
            continue
        picked = [by_key[lines[y]] for y in ys]
        means = [row["test_at_best_mean"] for row in picked]
        # A single seed has no interval: a zero-length bar says so rather than hiding the dot. An accuracy
        # lies in [0, 100]: the t-interval, symmetric by construction, is cut there.
        errors = [row["test_at_best_ci95"] or 0.0 for row in picked]
        below = [min(error, mean) for mean, error in zip(means, errors)]
        above = [min(error, 100.0 - mean) for mean, error in zip(means, errors)]
        axis.errorbar(means, ys, xerr=[below, above], fmt="o", color=model_color(model), capsize=3)
        for mean, error, y in zip(means, above, ys, strict=True):
            axis.annotate(
                f"{mean:.2f}", (mean + error, y), xytext=(4, 0), textcoords="offset points", va="center", fontsize=8
            )
    _separate_variants(axis, lines)
    axis.margins(x=0.08)
    axis.grid(axis="x", alpha=0.3)
    axis.set_title("test top-1 per method")
    axis.set_xlabel("test top-1 (%) at the selected epoch, mean and 95 % t-interval over seeds")


def _difference_panel(axis: Axes, by_key: dict[tuple[str, str], dict], lines: list[tuple[str, str]]) -> None:
    # One error bar per line, so that each can be filled (significant) or hollow on its own.
    for y, key in enumerate(lines):
        row = by_key[key]
        mean = row["diff_vs_independent_mean"]
        if mean is None:
            continue
        error, significant = row["diff_vs_independent_ci95"], row["diff_vs_independent_significant"]
        label = f"{mean:+.2f}{' *' if significant else ''}"
        _difference_dot(axis, y, mean, error, significant, model_color(key[1]), label, fontsize=8)
    # The zero line counts in autoscaling: zero stays in view even when every difference has one sign.
    axis.axvline(0, color="black", lw=1)
    _separate_variants(axis, lines)
    axis.margins(x=0.15)
    axis.grid(axis="x", alpha=0.3)
    axis.set_title("paired difference to independent (same seeds)")
    axis.set_xlabel("Δ test top-1 (points), mean and 95 % t-interval;\nfilled and *: the interval excludes 0")


def _difference_dot(
    axis: Axes, y: int, mean: float, error: float, filled: bool, color: str, label: str, fontsize: float
) -> None:
    """A difference with its interval on line ``y``: filled and its label bold where it holds, hollow otherwise."""
    axis.errorbar([mean], [y], xerr=[error], fmt="o", color=color, mfc=color if filled else "white", capsize=3)
    axis.annotate(
        label,
        (mean + error, y),
        xytext=(4, 0),
        textcoords="offset points",
        va="center",
        fontsize=fontsize,
        fontweight="bold" if filled else "normal",
    )


def plot_study(rows: list[dict], path: Path, setting: str) -> Path:
    """Save `study_figure` as the PNG ``path``.

    Args:
        rows: a study's aggregated rows.
        path: the PNG to write.
        setting: data, backbone, epochs and seeds for the title.
    """
    return _save(study_figure(rows, setting), path)


def verdict_figure(rows: list[dict], setting: str, baseline: str) -> Figure:
    """The study's question at a glance: each cell's deployed student against the baseline's, one line per cell.

    Each line is the paired difference with its 95 % t-interval; the dot is filled where Holm's correction across
    the cells holds the difference (adjusted p < 0.05), hollow otherwise, and the label gives the interval, the
    adjusted p-value and the seeds.

    Args:
        rows: `mfef_keras.training.study.aggregate` rows; those Holm's correction adjusted are drawn, in their
            order (`mfef_keras.training.study_significance.corrected_cells`).
        setting: the study's data, backbone, epochs and seeds, shown in the title.
        baseline: the variant the differences are to.

    Raises:
        ValueError: fewer than two cells' deployed students were tested against the baseline.
    """
    tested = corrected_cells(rows)
    if not tested:
        raise ValueError("Fewer than two cells' deployed students were tested against the baseline: nothing to draw.")
    plt = _pyplot()
    height = 1.8 + 0.42 * len(tested)
    fig, axis = plt.subplots(figsize=(10, height))
    for y, row in enumerate(tested):
        mean, error = row["diff_vs_independent_mean"], row["diff_vs_independent_ci95"]
        label = (
            f"{mean:+.2f} [{mean - error:+.2f}, {mean + error:+.2f}] · Holm p {row['diff_vs_independent_p_holm']:.2f}"
            f" · {row['n']} seeds"
        )
        holds = row["diff_vs_independent_significant_holm"]
        _difference_dot(axis, y, mean, error, holds, model_color("deployed"), label, fontsize=9)
    axis.axvline(0, color="black", lw=1)
    axis.set_yticks(range(len(tested)), [row["variant"] for row in tested])
    axis.set_ylim(len(tested) - 0.5, -0.5)
    # Room on the right for the labels, which start where each interval ends.
    low, high = axis.get_xlim()
    axis.set_xlim(low, high + 0.6 * (high - low))
    axis.grid(axis="x", alpha=0.3)
    axis.set_title(f"deployed student against {baseline} trained alone, paired by seed")
    axis.set_xlabel(
        "Δ test top-1 (points), mean and 95 % t-interval over seeds;\n"
        "filled: holds after Holm's correction across the cells (adjusted p < 0.05)"
    )
    fig.suptitle(setting, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / height))
    return fig


def plot_verdict(rows: list[dict], path: Path, setting: str, baseline: str) -> Path:
    """Save `verdict_figure` as the PNG ``path``.

    Args:
        rows: a study's aggregated rows.
        path: the PNG to write.
        setting: the study's setting for the title.
        baseline: the variant the differences are to.
    """
    return _save(verdict_figure(rows, setting, baseline), path)


def convergence_figure(curves: dict[str, list[float]], setting: str, baseline: str | None = None) -> Figure:
    """Each variant's deployed-student test top-1 per epoch: every epoch on the left, the final ones zoomed right.

    Args:
        curves: ``{variant: test top-1 (%) per epoch}``, mean over seeds
            (`mfef_keras.training.study_convergence.mean_curves`).
        setting: the study's data, backbone, epochs and seeds, shown in the title.
        baseline: the variant drawn in black, thicker, for the others to be read against.
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, (whole, final) = plt.subplots(1, 2, figsize=(13, 5.2))
    epochs = max(len(curve) for curve in curves.values())
    # The final third, at least five epochs: where a step schedule's last decays play out.
    start = max(1, epochs - max(5, epochs // 3) + 1)
    # A method keeps its colour across cohorts and a cohort its line style, so both read off the legend at once.
    methods = list(dict.fromkeys(variant.split("@")[0] for variant in curves if variant != baseline))
    cohorts = list(dict.fromkeys(variant.partition("@")[2] for variant in curves if variant != baseline))
    for variant, curve in curves.items():
        is_baseline = variant == baseline
        method, _, cohort = variant.partition("@")
        style = {
            "color": "black" if is_baseline else plt.get_cmap("tab10")(methods.index(method) % 10),
            "linestyle": "-" if is_baseline else _COHORT_STYLES[cohorts.index(cohort) % len(_COHORT_STYLES)],
            "linewidth": 2.4 if is_baseline else 1.3,
            "marker": "o" if epochs <= _MARKERS_UP_TO_EPOCHS else None,
            "markersize": 3,
            "label": f"{variant} (alone)" if is_baseline else variant,
        }
        xs = np.arange(1, len(curve) + 1)
        whole.plot(xs, curve, **style)
        final.plot(xs[start - 1 :], curve[start - 1 :], **style)
    whole.set_title("every epoch")
    final.set_title(f"epochs {start}-{epochs}, zoomed")
    tail = [value for curve in curves.values() for value in curve[start - 1 :]]
    margin = max(0.05, 0.08 * (max(tail) - min(tail)))
    final.set_ylim(min(tail) - margin, max(tail) + margin)
    for axis in (whole, final):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("epoch")
        axis.set_ylabel("deployed student's test top-1 (%)")
        axis.grid(alpha=0.3)
    final.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(setting)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / 5.2))
    return fig


def plot_convergence(curves: dict[str, list[float]], path: Path, setting: str, baseline: str | None = None) -> Path:
    """Save `convergence_figure` as the PNG ``path``.

    Args:
        curves: ``{variant: test top-1 (%) per epoch}``.
        path: the PNG to write.
        setting: the study's setting for the title.
        baseline: the variant drawn in black.
    """
    return _save(convergence_figure(curves, setting, baseline), path)
