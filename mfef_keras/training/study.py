"""`run_study`: every method (and MFEF ablation) with every seed, aggregated into the comparison table."""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from mfef_keras._names import unknown_name_error
from mfef_keras._outputs import check_output_dir
from mfef_keras.distill import METHODS
from mfef_keras.student_dir import write_json_atomic
from mfef_keras.training.config import TrainConfig

# Variant name -> (method, ablated MFEF components).
ABLATION_VARIANTS = {
    "mfef-no_multi_scale": ("mfef", ("multi_scale",)),
    "mfef-no_attention": ("mfef", ("attention",)),
    "mfef-no_multi_scale-no_attention": ("mfef", ("multi_scale", "attention")),
}


def study_variants(methods: Sequence[str], ablation: bool) -> dict[str, tuple[str, tuple[str, ...]]]:
    """The runs of a study: each method as is, plus the MFEF ablations when ``ablation``.

    Args:
        methods: the methods to compare; at least one, each one of `METHODS`.
        ablation: add the MFEF ablations.
    """
    if not methods:
        raise ValueError(f"No method to study: --methods needs one or more of {', '.join(sorted(METHODS))}.")
    for method in methods:
        if method not in METHODS:
            raise unknown_name_error("method", method, METHODS)
    variants = {method: (method, ()) for method in methods}
    if ablation:
        variants.update(ABLATION_VARIANTS)
    return variants


def _summary_of(run_dir: Path) -> dict | None:
    path = run_dir / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


def run_study(
    base: TrainConfig,
    methods: Sequence[str],
    seeds: Sequence[int],
    out_dir: str | Path,
    ablation: bool = False,
    echo: Callable[[str], None] = print,
    train_fn: Callable | None = None,
) -> dict:
    """Train every variant with every seed under ``out_dir/runs`` and write the table and chart.

    Finished runs (with a ``summary.json``) are skipped and interrupted ones resume, so
    an interrupted study started again continues where it stopped. Every variant uses
    the same seeds, hence the same initial student weights and the same data order.

    Args:
        base: the shared configuration (dataset, backbone, epochs...).
        methods: methods to compare.
        seeds: seeds to run each method with.
        out_dir: the study directory.
        ablation: add MFEF without multi-scale, without attention and without both.
        echo: where progress lines go.
        train_fn: the training function (`mfef_keras.training.runner.train` by default).

    Returns:
        ``{"rows": [...], "table": markdown, "runs": {variant: {seed: run_dir}}}``.
    """
    if train_fn is None:
        from mfef_keras.training.runner import train as train_fn
    variants = study_variants(methods, ablation)
    out = check_output_dir(out_dir)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    summaries: dict[str, dict[int, dict]] = {}
    runs: dict[str, dict[int, str]] = {}
    started = time.perf_counter()
    for variant, (method, ablate) in variants.items():
        for seed in seeds:
            run_dir = out / "runs" / f"{variant}-seed{seed}"
            runs.setdefault(variant, {})[seed] = str(run_dir)
            summary = _summary_of(run_dir)
            if summary is None:
                echo(f"[study] {variant} seed {seed}: training in {run_dir}")
                config = dataclasses.replace(base, method=method, ablate=list(ablate), seed=seed, run_dir=str(run_dir))
                train_fn(config, echo=echo)
                summary = _summary_of(run_dir)
            else:
                echo(f"[study] {variant} seed {seed}: finished earlier, skipped")
            summaries.setdefault(variant, {})[seed] = summary
    rows = aggregate(summaries)
    table = format_table(rows)
    elapsed = time.perf_counter() - started
    (out / "table.md").write_text(table + "\n")
    write_json_atomic(
        out / "study.json",
        {"rows": rows, "runs": runs, "seeds": list(seeds), "config": base.to_dict(), "elapsed_s": elapsed},
    )
    plot_study(rows, out / "comparison.png")
    echo(table)
    return {"rows": rows, "table": table, "runs": runs}


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(summaries: dict[str, dict[int, dict]]) -> list[dict]:
    """One row per (variant, model): mean and std over seeds of best and last top-1, in percent.

    Besides each student, the fused head and the ensemble, a ``students`` row averages
    all students of all seeds: the number to compare between methods.
    """
    rows = []
    for variant, by_seed in summaries.items():
        per_seed = list(by_seed.values())
        models = [m for m in per_seed[0] if m != "best_student"]
        students = [m for m in models if m.startswith("s") and m[1:].isdigit()]
        for model in ["students", *models]:
            names = students if model == "students" else [model]
            best = [100 * s[name]["best"] for s in per_seed for name in names]
            last = [100 * s[name]["last"] for s in per_seed for name in names]
            best_mean, best_std = _mean_std(best)
            last_mean, last_std = _mean_std(last)
            rows.append(
                dict(
                    variant=variant,
                    model=model,
                    best_mean=best_mean,
                    best_std=best_std,
                    last_mean=last_mean,
                    last_std=last_std,
                    n=len(best),
                )
            )
    return rows


def format_table(rows: list[dict]) -> str:
    """The rows as a markdown table (top-1 %, mean ± std over seeds)."""
    lines = ["| method | model | best-epoch top-1 (%) | last-epoch top-1 (%) | n |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['variant']} | {row['model']} | {row['best_mean']:.2f} ± {row['best_std']:.2f} | "
            f"{row['last_mean']:.2f} ± {row['last_std']:.2f} | {row['n']} |"
        )
    return "\n".join(lines)


def plot_study(rows: list[dict], path: Path) -> Path:
    """Bar chart of the mean student's, fused head's and ensemble's best top-1 per variant, with std error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(dict.fromkeys(row["variant"] for row in rows))
    models = ["students", "fused", "ensemble"]
    width = 0.8 / len(models)
    fig, axis = plt.subplots(figsize=(max(6, 1.6 * len(variants)), 4.5))
    for k, model in enumerate(models):
        found = {row["variant"]: row for row in rows if row["model"] == model}
        xs = [i + k * width for i, v in enumerate(variants) if v in found]
        means = [found[v]["best_mean"] for v in variants if v in found]
        stds = [found[v]["best_std"] for v in variants if v in found]
        axis.bar(xs, means, width, yerr=stds, capsize=3, label=model)
    lows = [row["best_mean"] - row["best_std"] for row in rows]
    axis.set_ylim(max(0.0, min(lows) - 2.0), 100.0)
    axis.set_xticks([i + width for i in range(len(variants))], variants, rotation=20, ha="right")
    axis.set(ylabel="best-epoch test top-1 (%)", title="online distillation methods (mean ± std over seeds)")
    axis.grid(axis="y", alpha=0.3)
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
