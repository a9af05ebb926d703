"""`run_study`: every method (and MFEF ablation) with every seed, aggregated into the comparison table."""

from __future__ import annotations

import dataclasses
import math
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mfef_keras._outputs import check_output_dir
from mfef_keras._regular_files import refuse_linked_folder
from mfef_keras.atomic_files import write_bytes_atomic, write_json_atomic
from mfef_keras.choices import cohort_names
from mfef_keras.training.config import TrainConfig
from mfef_keras.training.plots import plot_convergence, plot_study, plot_verdict
from mfef_keras.training.progress import format_duration
from mfef_keras.training.run_directory import (
    DATA_FILE,
    METRICS_FILE,
    SELECTION_LABELS,
    config_differences,
    read_run_json,
    summary_models,
)
from mfef_keras.training.study_convergence import format_convergence, mean_curves
from mfef_keras.training.study_significance import (
    add_holm_correction,
    corrected_cells,
    format_corrected,
    paired_p_value,
)


@dataclass(frozen=True)
class Variant:
    """One cell of a study: a method, its ablated parts and the cohort it trains (None: the study's own).

    Args:
        method: a registered method.
        ablate: MFEF parts switched off.
        backbone: the cohort's backbones, comma-separated, or None for the study's ``--backbone``.
        num_students: students of a single backbone, or None for the study's (or the cohort's) count.

    Example:
        >>> Variant("independent", backbone="resnet8", num_students=1).config(TrainConfig(), 0, Path("r")).cohort
        ['resnet8']
    """

    method: str
    ablate: tuple[str, ...] = ()
    backbone: str | None = None
    num_students: int | None = None

    def config(self, base: TrainConfig, seed: int, run_dir: Path) -> TrainConfig:
        """The run's configuration: ``base`` with this variant's method and cohort and ``seed``."""
        changes = dict(method=self.method, ablate=list(self.ablate), seed=seed, run_dir=str(run_dir))
        if self.backbone is not None:
            changes["backbone"] = self.backbone
        if self.num_students is not None:
            changes["num_students"] = self.num_students
        return dataclasses.replace(base, **changes)


# Variant name -> ablated MFEF components.
ABLATION_VARIANTS = {
    "mfef-no_multi_scale": ("multi_scale",),
    "mfef-no_attention": ("attention",),
    "mfef-no_multi_scale-no_attention": ("multi_scale", "attention"),
}
# A mean top-1 less than this many points above 1/classes means the models learned (almost) nothing.
CHANCE_MARGIN = 5.0
# The variant every other one is compared with, seed by seed: plain training of each student alone.
BASELINE = "independent"
# Model -> the baseline's model it is paired with. The fused head and the ensemble both combine the students,
# so the fair plain-training counterpart of either is the independent students' ensemble. The deployed student
# (the run's best_student/) is compared with the baseline's deployed student.
PAIRED_BASELINE_MODEL = {"deployed": "deployed", "students": "students", "ensemble": "ensemble", "fused": "ensemble"}
# Under a table with paired differences: what they are and what their marks mean.
PAIRING_FOOTNOTE = (
    f"Δ: mean over the seeds both ran of the difference to {BASELINE} trained with the same seed (same data "
    "order, and the same initial students within one cohort), in points of test top-1 at the selected epoch, with "
    f"its 95 % t-interval; the deployed student is compared with {BASELINE}'s deployed student, the students with "
    f"{BASELINE}'s students, the fused head and the ensemble with {BASELINE}'s ensemble. * the interval excludes "
    "0. — not applicable: the baseline itself, a single student, or fewer than two seeds in common."
)


def study_variants(
    methods: Sequence[str],
    ablation: bool,
    cohorts: Sequence[str] = (),
    deployed: str | None = None,
) -> dict[str, Variant]:
    """The cells of a study: each method as is, plus the MFEF ablations when ``ablation``.

    With ``cohorts``, the baseline trains the ``deployed`` backbone alone (``independent@<deployed>``, first),
    then every other method trains each cohort in turn (cells ``<method>@<a>+<b>``, cohort by cohort), and the
    ablations train the first cohort.

    Args:
        methods: the methods to compare; at least one, each a registered method.
        ablation: add the MFEF ablations.
        cohorts: comma-separated backbones of each cohort (``resnet32,resnet8``); each must hold ``deployed``.
        deployed: the backbone the cohorts deploy (their smallest student), which the baseline trains alone.
    """
    from mfef_keras.distill.methods import list_methods, method_class

    if not methods:
        raise ValueError(f"No method to study: --methods needs one or more of {', '.join(list_methods())}.")
    for method in methods:
        method_class(method)
    if not cohorts:
        variants = {method: Variant(method) for method in methods}
        if ablation:
            variants.update({name: Variant("mfef", ablate) for name, ablate in ABLATION_VARIANTS.items()})
        return variants
    for cohort in cohorts:
        if deployed not in cohort_names(cohort):
            raise ValueError(
                f"The cohort {cohort} does not hold the deployed backbone {deployed!r} (--backbone): every cohort "
                "trains the student it deploys beside its peers."
            )
    labels = {cohort: "+".join(cohort_names(cohort)) for cohort in cohorts}
    variants = {}
    if BASELINE in methods:
        variants[f"{BASELINE}@{deployed}"] = Variant(BASELINE, backbone=deployed, num_students=1)
    for cohort in cohorts:
        variants.update(
            {f"{method}@{labels[cohort]}": Variant(method, backbone=cohort) for method in methods if method != BASELINE}
        )
    if ablation:
        first = cohorts[0]
        variants.update(
            {f"{name}@{labels[first]}": Variant("mfef", ablate, first) for name, ablate in ABLATION_VARIANTS.items()}
        )
    return variants


def _summary_of(run_dir: Path) -> dict | None:
    path = run_dir / "summary.json"
    if not path.exists():
        return None
    summary = read_run_json(path)
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
    cohorts: Sequence[str] = (),
    force: bool = False,
    train: bool = True,
) -> dict:
    """Train every variant with every seed under ``out_dir/runs`` and write the table and charts.

    Finished runs (with a ``summary.json``) are skipped and interrupted ones resume, so an interrupted study
    started again continues where it stopped, on this machine or on another that has the finished runs'
    results (their config.json and summary.json are enough). A run whose stored configuration differs from the
    study's is refused, naming the keys, unless ``force`` (then it is trained again). The runs go seed by seed,
    so a study stopped early has every variant for the seeds it finished. Every variant uses the same seeds,
    hence the same data order (and, for one cohort, the same initial students). Where the runs recorded their
    students' test top-1 at every epoch, the table also says how much the deployed students still moved over
    the last epochs, and ``convergence.png`` draws their curves (`mfef_keras.training.study_convergence`). With two
    or more cells tested against the baseline, the table also gives their Holm-corrected verdicts
    (`mfef_keras.training.study_significance`) and ``verdict.png`` draws them.

    Args:
        base: the shared configuration (dataset, backbone, epochs...). With ``cohorts``, its backbone is the
            one the cohorts deploy, which the baseline trains alone.
        methods: methods to compare.
        seeds: seeds to run each method with.
        out_dir: the study directory.
        ablation: add MFEF without multi-scale, without attention and without both.
        echo: where progress lines go.
        train_fn: the training function (`mfef_keras.training.runner.train` by default).
        cohorts: the cohorts to train each method on (see `study_variants`); none: ``base``'s students.
        force: retrain the runs whose stored configuration differs from the study's.
        train: train the runs not finished yet; False writes the table and chart of the finished ones only (a
            study still running elsewhere, or one whose results came from another machine).

    Returns:
        ``{"rows": [...], "table": markdown, "runs": {variant: {seed: run_dir}}, "figures": [PNG paths written]}``.
    """
    if train_fn is None:
        from mfef_keras.training.runner import train as train_fn
    if force and not train:
        raise ValueError("--force retrains runs and --no-train trains none: give one of them.")
    variants = study_variants(methods, ablation, cohorts, base.backbone)
    baseline = next((name for name, variant in variants.items() if variant.method == BASELINE), BASELINE)
    out = check_output_dir(out_dir)
    plan = [
        (name, seed, variants[name].config(base, seed, out / "runs" / f"{name}-seed{seed}"))
        for seed in seeds
        for name in variants
    ]
    for _, _, config in plan:
        # runs/ or a run in it that links elsewhere (in a study downloaded or shared) would be trained into, or
        # with --force emptied, wherever it points.
        refuse_linked_folder(config.run_dir, below=out, fix="Remove the link, or give the study another --out.")
    _check_stored_configs(plan, force)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    summaries: dict[str, dict[int, dict]] = {}
    runs: dict[str, dict[int, str]] = {}
    started = time.perf_counter()
    untrained = sum(_summary_of(Path(config.run_dir)) is None for _, _, config in plan)
    run_times: list[float] = []
    for number, (variant, seed, config) in enumerate(plan, 1):
        run_dir = Path(config.run_dir)
        summary = _summary_of(run_dir)
        head = f"[study] run {number}/{len(plan)}: {variant} seed {seed}"
        if summary is None and not train:
            echo(f"{head}: not finished, left out of the table")
            continue
        runs.setdefault(variant, {})[seed] = str(run_dir)
        if summary is None:
            # The runs left to train (this one included) at the mean time of those trained so far.
            eta = f" (ETA {format_duration(untrained * statistics.fmean(run_times))})" if run_times else ""
            echo(f"{head}, training in {run_dir}{eta}")
            run_started = time.perf_counter()
            train_fn(config, echo=echo)
            run_times.append(time.perf_counter() - run_started)
            untrained -= 1
            summary = _summary_of(run_dir)
        else:
            echo(f"{head}: finished earlier, skipped")
        summaries.setdefault(variant, {})[seed] = summary
    if not summaries:
        raise ValueError(f"No run of the study in {out} has finished yet: nothing to tabulate.")
    rows = aggregate(summaries, baseline)
    epochs = {
        variant: {seed: recorded_epochs(Path(run)) for seed, run in by_seed.items()}
        for variant, by_seed in runs.items()
    }
    minutes = {
        variant: {seed: training_minutes(recorded) for seed, recorded in by_seed.items()}
        for variant, by_seed in epochs.items()
    }
    curves = mean_curves(epochs, summaries)
    convergence = format_convergence(curves, {variant: len(runs[variant]) for variant in curves})
    finished = sum(len(by_seed) for by_seed in summaries.values())
    progress = None if finished == len(plan) else (finished, len(plan))
    setting = study_setting(base, seeds, cohorts, progress)
    parts = (
        f"Setting: {setting}.",
        format_table(rows, _num_classes(runs), baseline),
        format_corrected(rows, baseline),
        convergence,
        format_times(minutes),
    )
    table = "\n\n".join(part for part in parts if part)
    elapsed = time.perf_counter() - started
    write_bytes_atomic(out / "table.md", (table + "\n").encode())
    study = {
        "rows": rows,
        "runs": runs,
        "training_minutes": minutes,
        "deployed_test_top1_per_epoch": curves,
        "seeds": list(seeds),
        "config": base.to_dict(),
        "elapsed_s": elapsed,
    }
    write_json_atomic(out / "study.json", study | ({"cohorts": list(cohorts)} if cohorts else {}))
    figures = [plot_study(rows, out / "comparison.png", setting)]
    if corrected_cells(rows):
        figures.append(plot_verdict(rows, out / "verdict.png", setting, baseline))
    if curves:
        figures.append(plot_convergence(curves, out / "convergence.png", setting, baseline))
    echo(table)
    return {"rows": rows, "table": table, "runs": runs, "figures": figures}


def _check_stored_configs(plan: list[tuple[str, int, TrainConfig]], force: bool) -> None:
    """Refuse (or, with ``force``, clear) the planned runs whose run directory holds another configuration.

    A study resumed with a changed setting would otherwise mix results of two experiments in one table.
    """
    changed = {Path(config.run_dir): config_differences(Path(config.run_dir), config) for _, _, config in plan}
    changed = {run_dir: keys for run_dir, keys in changed.items() if keys}
    if not changed:
        return
    if not force:
        listed = "; ".join(f"{run_dir.name} (differs in: {', '.join(keys)})" for run_dir, keys in changed.items())
        raise ValueError(
            f"{len(changed)} run{'s' if len(changed) != 1 else ''} of this study were trained with another "
            f"configuration: {listed}. Give the settings they were trained with, a new --out, or --force to "
            "train those runs again."
        )
    for run_dir in changed:
        shutil.rmtree(run_dir)


def recorded_epochs(run_dir: Path) -> list[dict] | None:
    """The rows of a finished run's metrics.json, one per epoch; None if it has none (a stand-in trainer's run).

    Args:
        run_dir: a finished run.
    """
    path = run_dir / METRICS_FILE
    return read_run_json(path)["epochs"] if path.exists() else None


def training_minutes(epochs: list[dict] | None) -> float | None:
    """The minutes a run spent in its epochs (the sum of their ``time_s``); None if it recorded none.

    Args:
        epochs: the rows of the run's metrics.json (`recorded_epochs`).
    """
    times = [row["time_s"] for row in epochs or () if "time_s" in row]
    return sum(times) / 60 if times else None


def format_times(minutes: dict[str, dict[int, float | None]]) -> str:
    """A markdown table of each variant's training minutes per run: mean, fastest and slowest over its seeds.

    Args:
        minutes: ``{variant: {seed: minutes or None}}``, as `training_minutes` gives them.
    """
    lines = ["| method | runs | training minutes per run: mean (fastest, slowest) |", "|---|---|---|"]
    for variant, by_seed in minutes.items():
        known = [value for value in by_seed.values() if value is not None]
        spread = f"{statistics.fmean(known):.1f} ({min(known):.1f}, {max(known):.1f})" if known else "—"
        lines.append(f"| {variant} | {len(by_seed)} | {spread} |")
    lines += [
        "",
        "Minutes are the sum of the epochs' times on the machine that trained each run, as loaded as it was then: "
        "a spread wider than the method's cost is the machine's doing.",
    ]
    return "\n".join(lines)


def _num_classes(runs: dict[str, dict[int, str]]) -> int | None:
    """The class count the study's runs recorded (None if none did, as with a stand-in trainer)."""
    for by_seed in runs.values():
        for run_dir in by_seed.values():
            path = Path(run_dir) / DATA_FILE
            if path.exists():
                return len(read_run_json(path)["class_names"])
    return None


def study_setting(
    base: TrainConfig, seeds: Sequence[int], cohorts: Sequence[str] = (), runs: tuple[int, int] | None = None
) -> str:
    """What a study's numbers hold for: data, backbone or cohorts, epochs and seeds, for the table and charts.

    Args:
        base: the study's shared configuration.
        seeds: the seeds every variant runs with.
        cohorts: the study's cohorts, if it has any (see `run_study`).
        runs: (finished, planned) runs of a study not finished yet, whose cells hold fewer seeds than planned;
            None for a finished one.
    """
    width = "" if base.base_width is None else f" (width {base.base_width})"
    if cohorts:
        students = f"deployed {base.backbone}{width} · cohorts {', '.join('+'.join(cohort_names(c)) for c in cohorts)}"
    else:
        students = f"{base.backbone}{width} · {base.num_students} students"
    data = base.dataset if base.train_limit is None else f"{base.dataset} ({base.train_limit} training images)"
    seed_list = ", ".join(str(seed) for seed in seeds)
    epochs = f"{base.epochs} epoch{'s' if base.epochs != 1 else ''}"
    setting = f"{data} · {students} · {epochs} · {len(seeds)} seed{'s' if len(seeds) != 1 else ''} ({seed_list})"
    return setting if runs is None else f"{setting} · in progress: {runs[0]} of {runs[1]} runs finished"


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


def aggregate(summaries: dict[str, dict[int, dict]], baseline: str = BASELINE) -> list[dict]:
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
    ``diff_vs_independent_significant`` whether that interval excludes zero, ``diff_vs_independent_p`` the
    paired t-test's two-sided p-value. All four are None for the baseline's rows, single students, a study
    without the baseline and fewer than two seeds in common. The deployed rows' p-values are also adjusted for
    their number (`mfef_keras.training.study_significance.add_holm_correction`).

    The ``deployed`` row is each run's deployed student (its best_student/: the best, on the selection split, of
    its smallest students), paired with the baseline's; a ``peer`` row averages the larger students of a mixed
    cohort.

    Args:
        summaries: ``{variant: {seed: summary.json of that run}}``.
        baseline: the variant the others are paired with.
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
        # Summaries of an older mfef name no deployed student (nor the cohort it was chosen from).
        best = per_seed[0].get("best_student")
        peers = [m for m in students if best and m not in best.get("chosen_from", students)]
        groups = {**({"deployed": None} if best else {}), **({"peer": peers} if peers else {}), "students": students}
        groups.update({model: [model] for model in models})
        for model, names in groups.items():

            def picked(summary: dict, key: str, names: list[str] | None = names) -> list[float]:
                entries = [summary["best_student"]] if names is None else [summary[name] for name in names]
                return [100 * entry[key] for entry in entries]

            at_best = [value for s in per_seed for value in picked(s, "test_at_best")]
            last = [value for s in per_seed for value in picked(s, "test_last")]
            best_mean, best_std = _mean_std(at_best)
            last_mean, last_std = _mean_std(last)
            seed_means = {seed: statistics.fmean(picked(s, "test_at_best")) for seed, s in by_seed.items()}
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
        row.update(_paired_difference(at_best_by_seed, row["variant"], row["model"], baseline))
    add_holm_correction(rows)
    return rows


def _paired_difference(
    at_best_by_seed: dict[tuple[str, str], dict[int, float]], variant: str, model: str, baseline: str
) -> dict:
    """The ``diff_vs_independent_*`` entries of one row (see `aggregate`)."""
    reference = at_best_by_seed.get((baseline, PAIRED_BASELINE_MODEL.get(model, "")))
    own = at_best_by_seed[variant, model]
    # Only seeds both ran pair up: a study extended with more seeds may not have trained them all yet.
    diffs = [] if variant == baseline or reference is None else [own[s] - reference[s] for s in own if s in reference]
    if len(diffs) < 2:
        return {
            "diff_vs_independent_mean": None,
            "diff_vs_independent_ci95": None,
            "diff_vs_independent_significant": None,
            "diff_vs_independent_p": None,
        }
    mean, half = statistics.fmean(diffs), t_interval(diffs)
    return {
        "diff_vs_independent_mean": mean,
        "diff_vs_independent_ci95": half,
        "diff_vs_independent_significant": abs(mean) > half,
        "diff_vs_independent_p": paired_p_value(diffs),
    }


def format_table(rows: list[dict], num_classes: int | None = None, baseline: str = BASELINE) -> str:
    """The rows as a markdown table (test top-1 %, mean ± std over seeds), chance-level results marked.

    Beside each mean ± std, the 95 % t-interval of the mean; when the study has `BASELINE` and another variant,
    also each row's paired difference to it with its 95 % interval, starred when the interval excludes zero,
    and a footnote saying how it is paired. A line under the table says on which split the epochs were selected.

    Args:
        rows: `aggregate` rows.
        num_classes: the dataset's class count: a mean within `CHANCE_MARGIN` points of chance
            (100 / classes %) gets a † and a footnote. None: not checked.
        baseline: the variant the differences are to.
    """
    chance = None if num_classes is None else 100 / num_classes
    flagged = False

    def cell(mean: float, std: float) -> str:
        nonlocal flagged
        at_chance = chance is not None and mean < chance + CHANCE_MARGIN
        flagged |= at_chance
        return f"{mean:.2f} ± {std:.2f}{' †' if at_chance else ''}"

    variants = {row["variant"] for row in rows}
    paired = baseline in variants and len(variants) > 1
    diff_header = f" Δ vs {baseline}, 95 % CI (points) |" if paired else ""
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
        lines += ["", PAIRING_FOOTNOTE.replace(BASELINE, baseline)]
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
