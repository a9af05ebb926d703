"""Where a study's deployed students stop improving: their test top-1 epoch by epoch, averaged over seeds.

A study compares methods at a fixed number of epochs; these curves show whether that number let every method
converge (the last epochs' change near zero) or whether a longer run would still move the comparison.
"""

from __future__ import annotations

import statistics

# The change over this many final epochs is the table's measure of "still moving".
LAST_EPOCHS = 3


def deployed_curve(epochs: list[dict] | None, summary: dict) -> list[float] | None:
    """The test top-1 (%) of the run's deployed student at every epoch, or None where the run did not record it.

    Args:
        epochs: the rows of the run's metrics.json (None: it has none).
        summary: its summary.json; ``best_student.name`` names the deployed student.
    """
    name = (summary.get("best_student") or {}).get("name")
    key = f"test_acc_{name}"
    if name is None or not epochs or any(key not in row for row in epochs):
        return None
    return [100 * row[key] for row in epochs]


def mean_curves(
    epochs: dict[str, dict[int, list[dict] | None]], summaries: dict[str, dict[int, dict]]
) -> dict[str, list[float]]:
    """Each variant's deployed-student curve, the mean over its seeds epoch by epoch.

    A variant is left out when any of its runs lacks a curve or the runs disagree on the number of epochs (a
    mean over unequal runs would mix epochs of different schedules).

    Args:
        epochs: ``{variant: {seed: the rows of that run's metrics.json, or None}}``.
        summaries: ``{variant: {seed: summary.json}}`` of the same runs.
    """
    means = {}
    for variant, by_seed in epochs.items():
        curves = [deployed_curve(rows, summaries[variant][seed]) for seed, rows in by_seed.items()]
        if not curves or any(curve is None for curve in curves) or len({len(curve) for curve in curves}) != 1:
            continue
        means[variant] = [statistics.fmean(values) for values in zip(*curves)]
    return means


def format_convergence(curves: dict[str, list[float]], seeds: dict[str, int], last: int = LAST_EPOCHS) -> str:
    """A markdown table of each variant's deployed test top-1 over its final epochs and the change across them.

    Args:
        curves: `mean_curves`' result.
        seeds: how many seeds each variant's curve averages.
        last: the epochs the change spans: from epoch E - ``last`` to the last epoch E, every one between shown.
    """
    if not curves:
        return ""
    epochs = max(len(curve) for curve in curves.values())
    shown = list(range(max(1, epochs - last), epochs + 1))
    header = " | ".join(f"epoch {epoch}" for epoch in shown)
    lines = [
        "Convergence: the deployed student's test top-1 (%) at the final epochs, mean over seeds, and its change "
        f"from epoch {shown[0]} to the end (`convergence.png` draws every epoch).",
        "",
        f"| method | seeds | {header} | change (points) |",
        "|---|---|" + "---|" * len(shown) + "---|",
    ]
    for variant, curve in curves.items():
        values = [curve[epoch - 1] if epoch <= len(curve) else None for epoch in shown]
        cells = " | ".join("—" if value is None else f"{value:.2f}" for value in values)
        # + 0.0 turns a change that rounds to -0.00 into +0.00.
        change = f"{round(curve[-1] - curve[shown[0] - 1], 2) + 0.0:+.2f}" if len(curve) >= shown[0] else "—"
        lines.append(f"| {variant} | {seeds[variant]} | {cells} | {change} |")
    return "\n".join(lines)
