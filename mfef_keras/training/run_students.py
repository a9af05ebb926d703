"""The models a run keeps, chosen after each epoch, and the metadata each is saved with.

``best_student/`` is the selected epoch's best compressed student, ``fused/`` the selected epoch's fused
classifier (methods with one), and ``students/s<i>`` every student at the last epoch.
"""

from __future__ import annotations

from pathlib import Path

from mfef_keras.student_card import StudentCard
from mfef_keras.student_dir import read_card, save_student_dir
from mfef_keras.training.config import TrainConfig
from mfef_keras.training.run_directory import summarize

# Where a run keeps its fused classifier (methods with one), as a student directory.
FUSED_DIR = "fused"


def student_card(
    config: TrainConfig, info, index: int, row: dict, selection: str, cohort: list[dict], deployed: dict | None = None
) -> StudentCard:
    """The card (metadata.json) of student ``index`` saved after the epoch of metrics row ``row``.

    Args:
        config: the run's config.
        info: the dataset's `DatasetInfo`.
        index: the student's index.
        row: the metrics row of the epoch (from 1) after which the student is saved.
        selection: how that epoch was chosen: ``config.selection`` for the best student, ``"last_epoch"``
            for ``students/s<i>``.
        cohort: each student's name, backbone and parameter count (`cohort_of`).
        deployed: for ``best_student/``, which students it was chosen from and why (`deployed_choice`).
    """
    return StudentCard(
        dataset=info,
        backbone=config.cohort[index],
        base_width=config.base_width,
        method=config.method,
        topology=config.topology,
        num_students=config.num_students,
        cohort=cohort,
        deployed=deployed or None,
        student_index=index,
        epoch=row["epoch"],
        test_accuracy=row[f"test_acc_s{index}"],
        validation_accuracy=row[f"val_acc_s{index}"],
        selection=selection,
        seed=config.seed,
        experiment_hash=config.experiment_hash(),
        config=config.to_dict(),
    )


def fused_card(config: TrainConfig, info, row: dict, cohort: list[dict]) -> StudentCard:
    """The card of the run's fused classifier (``fused/``), saved after the epoch of metrics row ``row``.

    Args:
        config: the run's config.
        info: the dataset's `DatasetInfo`.
        row: the metrics row of the epoch (from 1) after which it is saved.
        cohort: each student's name, backbone and parameter count (`cohort_of`).
    """
    parameters = sum(entry["parameters"] for entry in cohort)
    return student_card(config, info, 0, row, config.selection, cohort).updated(
        model="fused",
        backbone="+".join(config.cohort),
        student_index=None,
        test_accuracy=row["test_acc_fused"],
        validation_accuracy=row["val_acc_fused"],
        note=(
            f"The fused classifier of the whole {config.method} cohort ({', '.join(config.cohort)} and the method's "
            f"head): the accuracy option, at least {parameters} parameters to serve; the compressed option is "
            "best_student/."
        ),
    )


def cohort_of(config: TrainConfig, distiller) -> list[dict]:
    """Each student's name, backbone and parameter count, as the summary and the student cards record them.

    Args:
        config: the run's config.
        distiller: the run's `OnlineDistiller`.
    """
    counts = distiller.student_parameter_counts()
    return [
        {"student": f"s{i}", "backbone": backbone, "parameters": count}
        for i, (backbone, count) in enumerate(zip(config.cohort, counts))
    ]


def run_summary(config: TrainConfig, history: list[dict], distiller, cohort: list[dict]) -> dict:
    """`summarize` of the run, its best student chosen among the smallest students (the ones to deploy).

    Args:
        config: the run's config.
        history: its metrics rows so far.
        distiller: the run's `OnlineDistiller`.
        cohort: `cohort_of` the run.
    """
    return summarize(
        history,
        config.num_students,
        bool(distiller.head_classifiers),
        config.selection,
        deployable=smallest_students(cohort),
    ) | {"cohort": cohort}


def smallest_students(cohort: list[dict]) -> list[int]:
    """The indices of the students with the fewest parameters: the compressed ones a run deploys.

    Args:
        cohort: `cohort_of` entries.
    """
    fewest = min(entry["parameters"] for entry in cohort)
    return [i for i, entry in enumerate(cohort) if entry["parameters"] == fewest]


def keep_selected(run_dir: Path, distiller, config: TrainConfig, info, history: list[dict], cohort: list[dict]) -> None:
    """Save ``fused/`` and ``best_student/`` when the epoch just ended (``history[-1]``) is the one selected.

    Args:
        run_dir: the run directory.
        distiller: the run's `OnlineDistiller`, as trained up to that epoch.
        config: the run's config.
        info: the dataset's `DatasetInfo`.
        history: the metrics rows up to and including that epoch.
        cohort: `cohort_of` the run.
    """
    row = history[-1]
    summary = run_summary(config, history, distiller, cohort)
    best = summary["best_student"]
    if distiller.online_method.has_fused_classifier() and summary["fused"]["best_epoch"] == row["epoch"]:
        save_student_dir(run_dir / FUSED_DIR, distiller.fused_classifier(), fused_card(config, info, row, cohort))
    if best["best_epoch"] == row["epoch"]:
        index = int(best["name"][1:])
        deployed = {key: best[key] for key in ("chosen_from", "reason")}
        save_student_dir(
            run_dir / "best_student",
            distiller.get_student(index),
            student_card(config, info, index, row, config.selection, cohort, deployed),
        )


def keep_last_students(
    run_dir: Path, distiller, config: TrainConfig, info, history: list[dict], cohort: list[dict]
) -> None:
    """Save every student of the last epoch as ``students/s<i>``, unless it is saved there already.

    Args:
        run_dir: the run directory.
        distiller: the run's `OnlineDistiller`, as trained up to the last epoch.
        config: the run's config.
        info: the dataset's `DatasetInfo`.
        history: the run's metrics rows.
        cohort: `cohort_of` the run.
    """
    for index in range(config.num_students):
        target = run_dir / "students" / f"s{index}"
        # A run extended after it finished replaces the students of its earlier last epoch.
        if not target.exists() or read_card(target).epoch != history[-1]["epoch"]:
            card = student_card(config, info, index, history[-1], "last_epoch", cohort)
            save_student_dir(target, distiller.get_student(index), card)
