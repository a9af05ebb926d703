"""`run_study`: every method (and MFEF ablation) with every seed, aggregated into the comparison table."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from mfef_keras._names import unknown_name_error
from mfef_keras._outputs import check_output_dir
from mfef_keras.distill import METHODS
from mfef_keras.student_dir import write_bytes_atomic, write_json_atomic
from mfef_keras.training.config import TrainConfig
from mfef_keras.training.plots import plot_study
from mfef_keras.training.progress import format_duration
from mfef_keras.training.run_directory import DATA_FILE, SELECTION_LABELS, summary_models

# Variant name -> (method, ablated MFEF components).
ABLATION_VARIANTS = {
    "mfef-no_multi_scale": ("mfef", ("multi_scale",)),
    "mfef-no_attention": ("mfef", ("attention",)),
    "mfef-no_multi_scale-no_attention": ("mfef", ("multi_scale", "attention")),
}
# A mean top-1 less than this many points above 1/classes means the models learned (almost) nothing.
CHANCE_MARGIN = 5.0
# The variant every other one is compared with, seed by seed: plain training of each student alone.
BASELINE = "independent"
# Model -> the baseline's model it is paired with. The fused head and the ensemble both combine the students,
# so the fair plain-training counterpart of either is the independent students' ensemble.
PAIRED_BASELINE_MODEL = {"students": "students", "ensemble": "ensemble", "fused": "ensemble"}
# Under a table with paired differences: what they are and what their marks mean.
PAIRING_FOOTNOTE = (
    f"Δ: mean over the seeds both ran of the difference to {BASELINE} trained with the same seed (same initial "
    "students, same data order), in points of test top-1 at the selected epoch, with its 95 % t-interval; "
    f"students are compared with {BASELINE}'s students, the fused head and the ensemble with {BASELINE}'s "
    "ensemble. * the interval excludes 0. — not applicable: the baseline itself, a single student, "
    "or fewer than two seeds in common."
)


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
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    _check_summary_format(summary, f"The run {run_dir}")
    return summary


def _check_summary_format(summary: dict, source: str) -> None:
    """Refuse a summary.json written before runs selected their epoch on a validation split.

    Such a summary holds ``best``/``last`` accuracies selected on test; mixing them with validation-selected
    ones would compare different protocols, and reading them fails on missing keys.
    """
    models = summary_models(summary)
    if "selection" not in summary or any("test_at_best" not in summary[model] for model in models):
        raise ValueError(
            f"{source} was trained by an older mfef: its summary.json has no validation-selected results "
            "(no 'selection', no 'test_at_best'). Delete that run directory to train it again, "
            "or give the study a new --out."
        )


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
    plan = [(variant, seed, out / "runs" / f"{variant}-seed{seed}") for variant in variants for seed in seeds]
    untrained = sum(_summary_of(run_dir) is None for _, _, run_dir in plan)
    run_times: list[float] = []
    for number, (variant, seed, run_dir) in enumerate(plan, 1):
        method, ablate = variants[variant]
        runs.setdefault(variant, {})[seed] = str(run_dir)
        summary = _summary_of(run_dir)
        head = f"[study] run {number}/{len(plan)}: {variant} seed {seed}"
        if summary is None:
            # The runs left to train (this one included) at the mean time of those trained so far.
            eta = f" (ETA {format_duration(untrained * statistics.fmean(run_times))})" if run_times else ""
            echo(f"{head}, training in {run_dir}{eta}")
            config = dataclasses.replace(base, method=method, ablate=list(ablate), seed=seed, run_dir=str(run_dir))
            run_started = time.perf_counter()
            train_fn(config, echo=echo)
            run_times.append(time.perf_counter() - run_started)
            untrained -= 1
            summary = _summary_of(run_dir)
        else:
            echo(f"{head}: finished earlier, skipped")
        summaries.setdefault(variant, {})[seed] = summary
    rows = aggregate(summaries)
    table = format_table(rows, _num_classes(runs))
    elapsed = time.perf_counter() - started
    write_bytes_atomic(out / "table.md", (table + "\n").encode())
    write_json_atomic(
        out / "study.json",
        {"rows": rows, "runs": runs, "seeds": list(seeds), "config": base.to_dict(), "elapsed_s": elapsed},
    )
    plot_study(rows, out / "comparison.png", study_setting(base, seeds))
    echo(table)
    return {"rows": rows, "table": table, "runs": runs}


def _num_classes(runs: dict[str, dict[int, str]]) -> int | None:
    """The class count the study's runs recorded (None if none did, as with a stand-in trainer)."""
    for by_seed in runs.values():
        for run_dir in by_seed.values():
            path = Path(run_dir) / DATA_FILE
            if path.exists():
                return len(json.loads(path.read_text())["class_names"])
    return None


def study_setting(base: TrainConfig, seeds: Sequence[int]) -> str:
    """What a study's numbers hold for: data, backbone, students, epochs and seeds, for the chart's title.

    Args:
        base: the study's shared configuration.
        seeds: the seeds every variant ran with.
    """
    backbone = base.backbone if base.base_width is None else f"{base.backbone} (width {base.base_width})"
    data = base.dataset if base.train_limit is None else f"{base.dataset} ({base.train_limit} training images)"
    seed_list = ", ".join(str(seed) for seed in seeds)
    epochs = f"{base.epochs} epoch{'s' if base.epochs != 1 else ''}"
    return (
        f"{data} · {backbone} · {base.num_students} students · {epochs} · "
        f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} ({seed_list})"
    )


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> float | None:
    """Half-width of the Student-t confidence interval for the mean of ``values``; None for fewer than two.

    Args:
        values: independent measurements (one per seed).
        confidence: the interval's coverage.
    """
    if len(values) < 2:
        return None
    # scipy comes with scikit-learn, a dependency; imported here to keep `import study` light.
    from scipy.stats import t

    quantile = t.ppf((1 + confidence) / 2, len(values) - 1)
    return float(quantile * statistics.stdev(values) / math.sqrt(len(values)))


def aggregate(summaries: dict[str, dict[int, dict]]) -> list[dict]:
    """One row per (variant, model): mean and std over seeds of the test top-1 at the selected and last epoch, in %.

    The selected epoch is each run's (see `summarize`: on the validation split unless the run selected on test,
    which each row's ``selection`` says). Besides each student, the fused head and the ensemble, a ``students``
    row averages all students of all seeds: the number to compare between methods. ``test_at_best_ci95`` is the
    half-width of the 95 % t-interval over seeds of the test top-1 at the selected epoch (students averaged
    within a seed, since the students of one seed share its data order); None for one seed.

    Every variant runs the same seeds, hence the same initial students and data order, so the ``students``,
    ``ensemble`` and ``fused`` rows of a variant other than `BASELINE` are also compared with the baseline seed
    by seed (see `PAIRED_BASELINE_MODEL`): ``diff_vs_independent_mean`` is the mean over the seeds both ran of
    the difference in points, ``diff_vs_independent_ci95`` the half-width of its 95 % t-interval and
    ``diff_vs_independent_significant`` whether that interval excludes zero. All three are None for the
    baseline's rows, single students, a study without the baseline and fewer than two seeds in common.

    Args:
        summaries: ``{variant: {seed: summary.json of that run}}``.
    """
    for variant, by_seed in summaries.items():
        for seed, summary in by_seed.items():
            _check_summary_format(summary, f"The {variant} run with seed {seed}")
    rows = []
    # (variant, model) -> {seed: test top-1 at the selected epoch in %, students averaged within the seed}
    at_best_by_seed: dict[tuple[str, str], dict[int, float]] = {}
    for variant, by_seed in summaries.items():
        per_seed = list(by_seed.values())
        models = summary_models(per_seed[0])
        students = [m for m in models if m.startswith("s") and m[1:].isdigit()]
        for model in ["students", *models]:
            names = students if model == "students" else [model]
            at_best = [100 * s[name]["test_at_best"] for s in per_seed for name in names]
            last = [100 * s[name]["test_last"] for s in per_seed for name in names]
            best_mean, best_std = _mean_std(at_best)
            last_mean, last_std = _mean_std(last)
            seed_means = {
                seed: statistics.fmean(100 * s[name]["test_at_best"] for name in names) for seed, s in by_seed.items()
            }
            at_best_by_seed[variant, model] = seed_means
            rows.append(
                dict(
                    variant=variant,
                    model=model,
                    selection=per_seed[0]["selection"],
                    test_at_best_mean=best_mean,
                    test_at_best_std=best_std,
                    test_at_best_ci95=t_interval(list(seed_means.values())),
                    test_last_mean=last_mean,
                    test_last_std=last_std,
                    n=len(at_best),
                )
            )
    for row in rows:
        row.update(_paired_difference(at_best_by_seed, row["variant"], row["model"]))
    return rows


def _paired_difference(at_best_by_seed: dict[tuple[str, str], dict[int, float]], variant: str, model: str) -> dict:
    """The ``diff_vs_independent_*`` entries of one row (see `aggregate`)."""
    baseline = at_best_by_seed.get((BASELINE, PAIRED_BASELINE_MODEL.get(model, "")))
    own = at_best_by_seed[variant, model]
    # Only seeds both ran pair up: a study extended with more seeds may not have trained them all yet.
    diffs = [] if variant == BASELINE or baseline is None else [own[s] - baseline[s] for s in own if s in baseline]
    if len(diffs) < 2:
        return {
            "diff_vs_independent_mean": None,
            "diff_vs_independent_ci95": None,
            "diff_vs_independent_significant": None,
        }
    mean, half = statistics.fmean(diffs), t_interval(diffs)
    return {
        "diff_vs_independent_mean": mean,
        "diff_vs_independent_ci95": half,
        "diff_vs_independent_significant": abs(mean) > half,
    }


def format_table(rows: list[dict], num_classes: int | None = None) -> str:
    """The rows as a markdown table (test top-1 %, mean ± std over seeds), chance-level results marked.

    Beside each mean ± std, the 95 % t-interval of the mean; when the study has `BASELINE` and another variant,
    also each row's paired difference to it with its 95 % interval, starred when the interval excludes zero,
    and a footnote saying how it is paired. A line under the table says on which split the epochs were selected.

    Args:
        rows: `aggregate` rows.
        num_classes: the dataset's class count: a mean within `CHANCE_MARGIN` points of chance
            (100 / classes %) gets a † and a footnote. None: not checked.
    """
    chance = None if num_classes is None else 100 / num_classes
    flagged = False

    def cell(mean: float, std: float) -> str:
        nonlocal flagged
        at_chance = chance is not None and mean < chance + CHANCE_MARGIN
        flagged |= at_chance
        return f"{mean:.2f} ± {std:.2f}{' †' if at_chance else ''}"

    variants = {row["variant"] for row in rows}
    paired = BASELINE in variants and len(variants) > 1
    diff_header = f" Δ vs {BASELINE}, 95 % CI (points) |" if paired else ""
    lines = [
        "| method | model | test top-1 at selected epoch (%) | 95 % CI of the mean (%) |"
        f"{diff_header} test top-1 at last epoch (%) | n |",
        "|---|---|---|---|" + ("---|" if paired else "") + "---|---|",
    ]
    for row in rows:
        diff = f" {_difference_cell(row)} |" if paired else ""
        lines.append(
            f"| {row['variant']} | {row['model']} | {cell(row['test_at_best_mean'], row['test_at_best_std'])} | "
            f"{_interval_cell(row['test_at_best_mean'], row['test_at_best_ci95'])} |{diff} "
            f"{cell(row['test_last_mean'], row['test_last_std'])} | {row['n']} |"
        )
    selections = sorted({row["selection"] for row in rows})
    lines += ["", f"Epochs {' or '.join(SELECTION_LABELS[s] for s in selections)}."]
    if paired:
        lines += ["", PAIRING_FOOTNOTE]
    if flagged:
        lines += [
            "",
            f"† Within {CHANCE_MARGIN:g} points of chance ({num_classes} classes: {chance:.1f} %): these models "
            "learned (almost) nothing. Train longer, lower the learning rate or check the labels.",
        ]
    return "\n".join(lines)


def _interval_cell(mean: float, half: float | None) -> str:
    return "—" if half is None else f"[{mean - half:.2f}, {mean + half:.2f}]"


def _difference_cell(row: dict) -> str:
    mean = row["diff_vs_independent_mean"]
    if mean is None:
        return "—"
    half = row["diff_vs_independent_ci95"]
    star = " *" if row["diff_vs_independent_significant"] else ""
    return f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}]{star}"
