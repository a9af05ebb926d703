"""What a comparison study says about a published student: its cell's figures over seeds, beside one seed's weights.

A preset holds one seed's weights, whose test accuracy is one draw; the study that trained it gives the mean over
seeds, its interval and the paired difference to the same network trained alone, which is what a user choosing a
student should read. `study_record` takes them from the study's ``study.json`` for the run the preset came from.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from mfef_keras._regular_files import read_regular
from mfef_keras.training.study_significance import FAMILY_LEVEL

STUDY_FILE = "study.json"
# The method `mfef study` pairs every other cell with (mfef_keras.training.study.BASELINE, named here so that
# importing the zoo stays free of the trainer).
BASELINE_METHOD = "independent"


def _read(path: Path) -> dict:
    try:
        return json.loads(read_regular(path))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path.parent} is not a study directory: it has no {path.name} (`mfef study --out DIR` writes one)."
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None


def _cell_of(study: dict, study_dir: Path, run_dir: Path) -> tuple[str, int]:
    """The study variant and seed that trained ``run_dir`` (one of ``study_dir/runs``)."""
    runs = study.get("runs") or {}
    if run_dir.resolve().parent == (study_dir / "runs").resolve():
        for variant, by_seed in runs.items():
            for seed, path in by_seed.items():
                if Path(path).name == run_dir.name:
                    return variant, int(seed)
    known = sorted(Path(path).name for by_seed in runs.values() for path in by_seed.values())
    raise ValueError(
        f"{run_dir} is not a finished run of the study in {study_dir}; its runs are in {study_dir / 'runs'}: "
        f"{', '.join(known[:12])}{', ...' if len(known) > 12 else ''}."
    )


def _study_command(run_dir: Path) -> str | None:
    """The `mfef study` command that trained the run (its environment.json records it), as a user types it."""
    environment = run_dir / "environment.json"
    command = _read(environment).get("command") if environment.is_file() else None
    if not command:
        return None
    words = shlex.split(command)
    return shlex.join(["mfef", *words[1:]]) if Path(words[0]).name == "mfef" else command


def study_record(study_dir: str | Path, run_dir: str | Path, deployed: bool) -> dict:
    """The figures of the study cell that ``run_dir`` belongs to, for the student published from it.

    Args:
        study_dir: a study directory (`mfef study --out`), with its ``study.json``.
        run_dir: one of its runs.
        deployed: whether the published student is the run's deployed one (its best student, among the smallest
            of the cohort); otherwise it is the cohort's larger peer.

    Returns:
        ``study`` (the directory's name), ``variant``, ``role`` (``deployed`` or ``peer``), ``seeds`` (how many
        the figures average), ``test_top1_mean``, ``test_top1_std``, ``test_top1_ci95`` (percent; the half-width
        of the 95 % t-interval, None below two seeds), ``baseline`` (the variant trained alone), the paired
        ``diff_vs_baseline_mean``, ``diff_vs_baseline_ci95``, ``diff_significant`` (the cell's own 95 % interval
        excludes zero) and ``diff_p_holm`` (the paired p-value adjusted across the study's cells; None for a study
        tabulated by an mfef that did not adjust), all None for the baseline and for a peer, which is not the
        baseline's network, and ``command`` (the `mfef study` that trained it).

    Raises:
        ValueError: ``run_dir`` is not a finished run of the study, or the study has no figures for the student.
    """
    study_dir, run_dir = Path(study_dir), Path(run_dir)
    study = _read(study_dir / STUDY_FILE)
    variant, _ = _cell_of(study, study_dir, run_dir)
    role = "deployed" if deployed else "peer"
    rows = {(row["variant"], row["model"]): row for row in study.get("rows", [])}
    row = rows.get((variant, role))
    if row is None:
        raise ValueError(
            f"The study in {study_dir} has no {role} figures for {variant}: publish its deployed student, or the "
            "larger student of a mixed cohort (a twin cohort's other student has none of its own)."
        )
    baseline = next((name for name, _ in rows if name.split("@")[0] == BASELINE_METHOD), None)
    return {
        "study": study_dir.resolve().name,
        "variant": variant,
        "role": role,
        "seeds": row["n"],
        "test_top1_mean": row["test_at_best_mean"],
        "test_top1_std": row["test_at_best_std"],
        "test_top1_ci95": row["test_at_best_ci95"],
        "selection": row.get("selection"),
        "baseline": baseline,
        "diff_vs_baseline_mean": row.get("diff_vs_independent_mean"),
        "diff_vs_baseline_ci95": row.get("diff_vs_independent_ci95"),
        "diff_significant": row.get("diff_vs_independent_significant"),
        "diff_p_holm": row.get("diff_vs_independent_p_holm"),
        "command": _study_command(run_dir),
    }


def _points(value: float) -> str:
    return f"{value:+.2f} points"


def describe(record: dict, unit: str = "%") -> str:
    """One sentence of the study's figures, e.g. for `mfef zoo info` and the model card.

    Args:
        record: a `study_record`.
        unit: what follows a percentage (``" %"`` in prose, ``"%"`` in tables).
    """
    seeds = record["seeds"]
    interval = record.get("test_top1_ci95")
    spread = f" (95 % CI ±{interval:.2f})" if interval is not None else ""
    text = (
        f"{record['role']} student of {record['variant']} in study {record['study']}: test top-1 "
        f"{record['test_top1_mean']:.2f}{unit}{spread} over {seeds} seed{'s' if seeds != 1 else ''}"
    )
    difference = record.get("diff_vs_baseline_mean")
    if record["variant"] == record.get("baseline"):
        return text + " (the network trained alone: the study's baseline)"
    if difference is None:
        return text
    return (
        f"{text}; {_points(difference)} against {record['baseline']} paired by seed "
        f"(95 % CI ±{record['diff_vs_baseline_ci95']:.2f}, {_verdict(record)})"
    )


def holds_family_wise(record: dict) -> bool:
    """Whether the paired difference holds after Holm's correction across the study's cells (at 5 %)."""
    holm = record.get("diff_p_holm")
    return holm is not None and holm < FAMILY_LEVEL


def _verdict(record: dict) -> str:
    """The difference's verdict, alone and, where the study adjusted, across its cells.

    A cell whose own interval excludes zero can still fail the correction for the study's other cells; calling
    it plainly "significant" would contradict the study's headline, which rests on the corrected verdict.
    """
    alone = record.get("diff_significant")
    holm = record.get("diff_p_holm")
    if holm is None:
        return "significant" if alone else "not significant"
    adjusted = f"Holm-adjusted p {holm:.3f}"
    if holds_family_wise(record):
        return f"significant, also after the correction across the study's cells: {adjusted}"
    if alone:
        return f"significant alone, not after the correction across the study's cells: {adjusted}"
    return f"not significant; {adjusted} across the study's cells"
