"""Which cells beat the baseline once the number of cells is counted: paired t-tests with Holm's correction.

A study tests each cell's deployed student against the baseline at 95 %. With ten cells, an interval or two can
exclude zero by chance alone; Holm's step-down correction keeps the chance of any false claim among all the
cells at 5 % (family-wise), and is never less powerful than Bonferroni's.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

# The rows tested together: each cell's deployed student against the baseline's (the study's question).
FAMILY_MODEL = "deployed"
FAMILY_LEVEL = 0.05


def paired_p_value(diffs: Sequence[float]) -> float | None:
    """The two-sided p-value of the paired t-test that the mean of ``diffs`` is zero; None for fewer than two.

    It agrees with the 95 % t-interval: p < 0.05 exactly when the interval excludes zero.

    Args:
        diffs: per-seed differences to the baseline.
    """
    if len(diffs) < 2:
        return None
    mean, spread = statistics.fmean(diffs), statistics.stdev(diffs)
    if spread == 0:
        # Identical differences: certain, unless they are all zero.
        return 1.0 if mean == 0 else 0.0
    from scipy.stats import t

    statistic = mean / (spread / math.sqrt(len(diffs)))
    return float(2 * t.sf(abs(statistic), len(diffs) - 1))


def holm_adjusted(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm's step-down adjusted p-values: a name is significant at level a, family-wise, when its value < a.

    The i-th smallest of m p-values is multiplied by m - i + 1, capped at 1, and kept at least as large as the
    adjusted values before it (so the order of the raw p-values is kept).

    Args:
        p_values: ``{name: p-value}`` of the tests of one family.
    """
    ordered = sorted(p_values.items(), key=lambda item: item[1])
    adjusted, running = {}, 0.0
    for rank, (name, p) in enumerate(ordered):
        running = max(running, min(1.0, (len(ordered) - rank) * p))
        adjusted[name] = running
    return adjusted


def add_holm_correction(rows: list[dict], level: float = FAMILY_LEVEL) -> None:
    """Give every row ``diff_vs_independent_p_holm`` and ``diff_vs_independent_significant_holm``, in place.

    The family is the `FAMILY_MODEL` rows with a paired p-value (``diff_vs_independent_p``); the other rows get
    None for both.

    Args:
        rows: `mfef_keras.training.study.aggregate` rows.
        level: the family-wise error rate.
    """
    family = {
        row["variant"]: row["diff_vs_independent_p"]
        for row in rows
        if row["model"] == FAMILY_MODEL and row.get("diff_vs_independent_p") is not None
    }
    adjusted = holm_adjusted(family)
    for row in rows:
        p = adjusted.get(row["variant"]) if row["model"] == FAMILY_MODEL else None
        row["diff_vs_independent_p_holm"] = p
        row["diff_vs_independent_significant_holm"] = None if p is None else p < level


def corrected_cells(rows: list[dict]) -> list[dict]:
    """The rows `add_holm_correction` adjusted, in their order; none where fewer than two cells were tested (one
    test has nothing to be corrected for, and its verdict is the interval's).

    Args:
        rows: rows that went through `add_holm_correction`.
    """
    tested = [row for row in rows if row.get("diff_vs_independent_p_holm") is not None]
    return tested if len(tested) >= 2 else []


def format_corrected(rows: list[dict], baseline: str, level: float = FAMILY_LEVEL) -> str:
    """A markdown table of each cell's deployed student against the baseline: Δ, p, Holm-adjusted p, verdict.

    Empty when fewer than two cells are tested (see `corrected_cells`).

    Args:
        rows: rows that went through `add_holm_correction`.
        baseline: the variant the differences are to.
        level: the family-wise error rate the verdict uses.
    """
    tested = corrected_cells(rows)
    if not tested:
        return ""
    lines = [
        f"Corrected for the number of cells: each cell's deployed student against {baseline}'s, paired t-test over "
        f"seeds; Holm's adjustment across the {len(tested)} cells keeps the chance of any false claim at "
        f"{100 * level:g} %.",
        "",
        "| method | Δ deployed (points) | p | Holm-adjusted p | beats the baseline after correction |",
        "|---|---|---|---|---|",
    ]
    for row in tested:
        mean = row["diff_vs_independent_mean"]
        if row["diff_vs_independent_significant_holm"]:
            verdict = "yes" if mean > 0 else "no: below it"
        else:
            verdict = "not established"
        lines.append(
            f"| {row['variant']} | {mean:+.2f} | {row['diff_vs_independent_p']:.3f} | "
            f"{row['diff_vs_independent_p_holm']:.3f} | {verdict} |"
        )
    return "\n".join(lines)
