"""`train(config)`: a whole training run with its run directory, checkpoints and resume."""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mfef_keras._outputs import disk_error_message
from mfef_keras.atomic_files import write_json_atomic
from mfef_keras.student_dir import read_metadata, save_student_dir
from mfef_keras.training.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from mfef_keras.training.config import TrainConfig
from mfef_keras.training.custom_loop import CustomLoop
from mfef_keras.training.devices import (
    batch_share,
    configure_cpu_devices,
    evaluation_scope,
    is_chief,
    make_strategy,
    shared_train_size,
)
from mfef_keras.training.environment import describe_environment
from mfef_keras.training.plots import plot_training_curves
from mfef_keras.training.progress import RunProgress, format_duration
from mfef_keras.training.run_directory import (
    RunDirectoryError,
    check_data_fingerprint,
    check_run_dir,
    data_fingerprint,
    extended_config,
    format_summary,
    read_run_json,
    summarize,
    sweep_leftovers,
    write_config,
    write_data_fingerprint,
    write_metrics,
)
from mfef_keras.training.run_lock import run_directory_lock
from mfef_keras.training.tensorboard_log import TensorBoardLog

# Where a run keeps its fused classifier (methods with one), as a student directory.
FUSED_DIR = "fused"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class RunResult:
    run_dir: Path
    history: list[dict]
    summary: dict


def _student_metadata(
    config: TrainConfig, info, index: int, row: dict, selection: str, cohort: list[dict], deployed: dict | None = None
) -> dict:
    """The metadata.json of student ``index`` saved after the epoch of metrics row ``row``.

    Args:
        config: the run's config.
        info: the dataset's `DatasetInfo`.
        index: the student's index.
        row: the metrics row of the epoch (from 1) after which the student is saved.
        selection: how that epoch was chosen: ``config.selection`` for the best student, ``"last_epoch"``
            for ``students/s<i>``.
        cohort: each student's name, backbone and parameter count (`_cohort`).
        deployed: for ``best_student/``, which students it was chosen from and why (`deployed_choice`).
    """
    return {
        "dataset": info.to_dict(),
        "backbone": config.cohort[index],
        "base_width": config.base_width,
        "method": config.method,
        "topology": config.topology,
        "num_students": config.num_students,
        "cohort": cohort,
        **({"deployed": deployed} if deployed else {}),
        "student_index": index,
        "epoch": row["epoch"],
        "test_accuracy": row[f"test_acc_s{index}"],
        "validation_accuracy": row[f"val_acc_s{index}"],
        "selection": selection,
        "seed": config.seed,
        "experiment_hash": config.experiment_hash(),
        "config": config.to_dict(),
    }


def _fused_metadata(config: TrainConfig, info, row: dict, cohort: list[dict]) -> dict:
    """The metadata.json of the run's fused classifier (``fused/``), saved after the epoch of metrics row ``row``."""
    parameters = sum(entry["parameters"] for entry in cohort)
    metadata = _student_metadata(config, info, 0, row, config.selection, cohort)
    metadata.update(
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
    return metadata


def _build(config: TrainConfig, info, strategy, steps_per_epoch: int):
    import keras

    from mfef_keras.distill import OnlineDistiller
    from mfef_keras.models import build_students

    # tf.distribute replicas each see a share of the batch; a JAX data-parallel step is one program over the
    # global batch, whose BatchNorm statistics are already global.
    sync_batchnorm = strategy.num_replicas_in_sync > 1 and keras.backend.backend() == "tensorflow"
    family = {"base_width": config.base_width} if config.base_width else {}
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        students = build_students(
            config.cohort,
            info.num_classes,
            num_students=config.num_students,
            topology=config.topology,
            input_shape=info.image_shape,
            sync_batchnorm=sync_batchnorm,
            **family,
        )
        distiller = OnlineDistiller(
            students,
            method=config.method,
            teacher=None if config.teacher is None else _teacher(config.teacher, info),
            teacher_weight=config.teacher_weight,
            temperature=config.temperature,
            rampup_epochs=config.effective_rampup_epochs,
            ablate=config.ablate,
            method_options=config.method_options,
            sync_batchnorm=sync_batchnorm,
        )
        distiller.compile(
            learning_rate=config.learning_rate,
            lr_milestones=config.effective_lr_milestones,
            lr_decay=config.lr_decay,
            lr_schedule=config.lr_schedule,
            lr_epochs=config.schedule_span,
            student_weight_decay=config.student_weight_decay,
            fusion_weight_decay=config.fusion_weight_decay,
            steps_per_epoch=steps_per_epoch,
            # JAX runs a step op by op without jax.jit, many times slower; --jit is TensorFlow's XLA choice.
            jit_compile=True if keras.backend.backend() == "jax" else bool(config.jit),
        )
        distiller.prepare()
    return distiller


def _teacher(source: str, info):
    """The frozen teacher named by ``source`` (a run, student directory, zoo name or .keras file) for ``info``'s data.

    Raises:
        ValueError: it cannot be loaded, or it was trained on other data (another dataset, classes, image shape or
            normalisation: the students' inputs would not be its inputs).
    """
    from mfef_keras.data.info import DatasetInfo
    from mfef_keras.training.model_source import resolve_model_source

    resolved = resolve_model_source(source)
    dataset = (resolved.metadata or {}).get("dataset")
    if dataset is None:
        raise ValueError(
            f"The teacher {resolved.description} has no metadata.json naming its dataset; give a run, a student "
            "directory or a zoo name, whose card says what data and normalisation the teacher expects."
        )
    theirs = DatasetInfo.from_dict(dataset)
    keys = ("name", "num_classes", "image_shape", "mean", "std")
    differing = [key for key in keys if getattr(theirs, key) != getattr(info, key)]
    if differing:
        raise ValueError(
            f"The teacher {resolved.description} was trained on other data than this run's {info.name}: its "
            + ", ".join(f"{key} {getattr(theirs, key)!r} (here {getattr(info, key)!r})" for key in differing)
            + ". A teacher must take the students' inputs and predict their classes."
        )
    return resolved.load()


def _epoch_line(config: TrainConfig, row: dict, has_fused: bool, seconds_left: float | None) -> str:
    names = [f"s{i}" for i in range(config.num_students)] + (["fused"] if has_fused else []) + ["ensemble"]
    accs = "  ".join(f"{n} {100 * row[f'val_acc_{n}']:.2f}/{100 * row[f'test_acc_{n}']:.2f}" for n in names)
    left = f", ETA {format_duration(seconds_left)}" if seconds_left and row["epoch"] < config.epochs else ""
    return (
        f"epoch {row['epoch']}/{config.epochs}  loss {row['loss']:.4f}  lr {row['lr']:.4g}  "
        f"val/test top-1 % {accs}  ({row['time_s']:.1f} s{left})"
    )


def _epochs_from_one(history: list[dict]) -> list[dict]:
    """``history`` with epochs counted from 1, as in the metrics a person reads.

    Args:
        history: a checkpoint's metrics rows; those of runs saved before epochs counted from 1 start at 0.
    """
    if history and history[0]["epoch"] == 0:
        return [{**row, "epoch": row["epoch"] + 1} for row in history]
    return history


def _check_data(config: TrainConfig, info, train_size: int) -> None:
    """Refuse, before anything is built or written, data the run cannot train or evaluate on.

    Raises:
        ValueError: the validation or test split is empty (every epoch is evaluated on both), or a batch is
            larger than the training set.
    """
    if not info.splits.get("val"):
        raise ValueError(
            f"Dataset {config.dataset} has no validation images (train split: {info.splits['train']} images), and "
            "every epoch is evaluated on them. Add training images (a folder dataset: train/<class>/*.png, or a "
            "valid/<class>/ tree)."
        )
    if not info.splits.get("test"):
        raise ValueError(
            f"Dataset {config.dataset} has no test images (test split: {info.splits.get('test', 0)} images), and "
            "every epoch is evaluated on it. Add images to its test split (a folder dataset: test/<class>/*.png)."
        )
    if config.batch_size > train_size:
        limit = (
            f", the first {train_size} of its {info.splits['train']} with --train-limit" if config.train_limit else ""
        )
        raise ValueError(
            f"batch_size {config.batch_size} (--batch-size) is larger than the training set ({train_size} images"
            f"{limit}): a batch can hold no more. Use --batch-size {train_size} or less."
        )


def _kept(run_dir: Path) -> str:
    # Said only of what is there: a new run directory without a checkpoint is removed on failure.
    if (run_dir / CHECKPOINT_FILE).exists():
        return f"the last good checkpoint is kept in {run_dir}"
    return "no epoch had finished, so no checkpoint was kept"


@contextmanager
def _owned(run_dir: Path, existed: bool, echo: Callable[[str], None]) -> Iterator[None]:
    """Hold ``run_dir`` for a trainer: created, locked and swept; removed again if new and nothing was saved.

    Raises:
        RunDirectoryBusy: another trainer holds it.
        RunDirectoryError: a write failed for want of space or permissions (the message names the path).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_directory_lock(run_dir, echo):
        removed = sweep_leftovers(run_dir)
        if removed:
            names = ", ".join(path.name for path in removed)
            echo(f"Removed {len(removed)} temporary files left by an interrupted run: {names}.")
        try:
            yield
        except BaseException as error:
            if not existed and not (run_dir / CHECKPOINT_FILE).exists():
                shutil.rmtree(run_dir, ignore_errors=True)
            told = _disk_error(error, run_dir) if isinstance(error, OSError) else None
            if told is not None:
                raise told from error
            raise


def _disk_error(error: OSError, run_dir: Path) -> RunDirectoryError | None:
    """A failed write told in one line (path, cause, what to do); None unless space or permissions caused it."""
    # ENOSPC from write() names no file; the run directory is where it was writing.
    message = disk_error_message(OSError(error.errno, error.strerror, error.filename or str(run_dir)))
    if message is None:
        return None
    return RunDirectoryError(f"{message} Training stopped: {_kept(run_dir)}; run the same command again to resume.")


def train(config: TrainConfig, echo: Callable[[str], None] = print) -> RunResult:
    """Train ``config`` in its run directory, resuming from the last completed epoch if there is one.

    The run directory is locked while training: a second trainer on it is refused.

    Raises:
        RunDirectoryError: the run directory is not writable, belongs to another config, is held by another
            trainer (`RunDirectoryBusy`), or a write to it failed (disk full, read-only, permission denied).
        ValueError: the data has no validation or test images, or fewer training images than a batch.
        TrainingDiverged: the loss became NaN; the last good checkpoint stays in place.
    """
    configure_cpu_devices(config.cpu_devices)
    import keras

    from mfef_keras.data import dataset_info

    run_dir = Path(config.run_dir or config.default_run_dir())
    extended = extended_config(run_dir, config)
    if extended is not None:
        config = extended
        echo(
            f"Extending {run_dir} to {config.epochs} epochs. Its schedule stays that of {config.schedule_epochs} "
            f"epochs (LR milestones {config.effective_lr_milestones}, ramp-up {config.effective_rampup_epochs:g} "
            "epochs): the added epochs train at its last rate."
        )
    existed = check_run_dir(run_dir, config, extends=extended is not None)
    # Fails fast (before anything is written) when the data is missing.
    info = dataset_info(config.dataset, config.data_dir)
    keras.mixed_precision.set_global_policy(config.precision)
    strategy = make_strategy(config.strategy)
    available = min(info.splits["train"], config.train_limit or info.splits["train"])
    train_size = shared_train_size(strategy, available, config.batch_size)
    if train_size < available:
        echo(
            f"Training on {train_size} of the {available} images, so that the {strategy.num_replicas_in_sync} "
            "devices share every batch evenly."
        )
    _check_data(config, info, train_size)
    fingerprint = data_fingerprint(info, train_size)
    if (run_dir / CHECKPOINT_FILE).exists():
        # A checkpoint trained on other data (say, a folder that gained images) must not be resumed
        # as if nothing changed; without one the run starts over and records the data anew.
        check_data_fingerprint(run_dir, fingerprint)

    chief = is_chief(strategy)
    if not chief:
        # Every worker computes the same thing; only the chief writes (and locks) the run directory.
        checkpoint_source, run_dir = run_dir, Path(tempfile.mkdtemp(prefix="mfef-worker-"))
        existed = False
    else:
        checkpoint_source = run_dir
    with _owned(run_dir, existed, echo):
        history, distiller = _train_epochs(config, info, strategy, chief, run_dir, checkpoint_source, train_size, echo)
        cohort = _cohort(config, distiller)
        summary = _summary(config, history, distiller, cohort)
        for index in range(config.num_students):
            target = run_dir / "students" / f"s{index}"
            # A run extended after it finished replaces the students of its earlier last epoch.
            if not target.exists() or read_metadata(target).get("epoch") != history[-1]["epoch"]:
                metadata = _student_metadata(config, info, index, history[-1], "last_epoch", cohort)
                save_student_dir(target, distiller.get_student(index), metadata)
        write_json_atomic(run_dir / "summary.json", summary)
        plot_training_curves(history, run_dir / "curves.png")
    echo(format_summary(summary))
    echo(f"Run directory: {run_dir}")
    return RunResult(run_dir=run_dir, history=history, summary=summary)


def _cohort(config: TrainConfig, distiller) -> list[dict]:
    """Each student's name, backbone and parameter count, as the summary and the student cards record them."""
    counts = distiller.student_parameter_counts()
    return [
        {"student": f"s{i}", "backbone": backbone, "parameters": count}
        for i, (backbone, count) in enumerate(zip(config.cohort, counts))
    ]


def _summary(config: TrainConfig, history: list[dict], distiller, cohort: list[dict]) -> dict:
    """`summarize` of the run, its best student chosen among the smallest students (the ones to deploy)."""
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
        cohort: `_cohort` entries.
    """
    fewest = min(entry["parameters"] for entry in cohort)
    return [i for i, entry in enumerate(cohort) if entry["parameters"] == fewest]


def _share(batches, strategy, examples: int, batch_size: int):
    """``batches``, or this process's part of each of them in a multi-process JAX run (see `batch_share`)."""
    from mfef_keras.data.process_share import process_share

    share = batch_share(strategy, examples, batch_size)
    return batches if share is None else process_share(batches, *share)


def _record_resume(run_dir: Path, epoch: int, seed: int) -> None:
    """Adds where a resumed run goes on (backend, devices, versions) to its environment.json, under ``resumes``.

    A run may resume on another backend or machine than it started on; its record must say so.
    """
    path = run_dir / "environment.json"
    environment = read_run_json(path) if path.exists() else {}
    resumed = {"after_epoch": epoch, **describe_environment(seed)}
    resumed.pop("seed")
    environment.setdefault("resumes", []).append(resumed)
    write_json_atomic(path, environment)


def _train_epochs(
    config: TrainConfig,
    info,
    strategy,
    chief: bool,
    run_dir: Path,
    checkpoint_source: Path,
    train_size: int,
    echo: Callable[[str], None],
):
    """Build the distiller, restore its checkpoint and train the remaining epochs; returns (history, distiller)."""
    import keras

    from mfef_keras.data import make_dataset

    distiller = _build(config, info, strategy, math.ceil(train_size / config.batch_size))
    has_fused = distiller.online_method.has_fused_classifier()
    cohort = _cohort(config, distiller)
    # tf.distribute's multi-worker strategy needs the package's own loop; JAX's processes train through fit.
    multiworker_tf = config.strategy == "multiworker" and keras.backend.backend() == "tensorflow"
    loop = CustomLoop(distiller, strategy) if multiworker_tf else None
    state = load_checkpoint(checkpoint_source, distiller)
    # Told once per run: a run may resume on another backend than it started on.
    replicas = strategy.num_replicas_in_sync
    echo(
        f"Keras backend: {keras.backend.backend()}"
        + (f", data-parallel over {replicas} devices." if replicas > 1 else ".")
    )
    if state is None:
        write_config(run_dir, config)
        write_data_fingerprint(run_dir, data_fingerprint(info, train_size))
        write_json_atomic(run_dir / "environment.json", describe_environment(config.seed))
        state = {"epoch": 0, "history": []}
        # Before the first epoch's line, which waits for tracing and a whole epoch.
        echo(f"Training {config.epochs} epoch{'s' if config.epochs != 1 else ''} in {run_dir}.")
    elif state["epoch"] < config.epochs:
        echo(f"Resuming {run_dir} after epoch {state['epoch']} of {config.epochs}.")
        # The same config, or the one a longer extension wrote (see `extended_config`).
        write_config(run_dir, config)
        _record_resume(run_dir, state["epoch"], config.seed)
    history = _epochs_from_one(state["history"])
    val_ds, test_ds = (
        _share(
            make_dataset(config.dataset, split, config.eval_batch_size, training=False, data_dir=config.data_dir),
            strategy,
            info.splits[split],
            config.eval_batch_size,
        )
        for split in ("val", "test")
    )
    display = RunProgress(config.epochs, math.ceil(train_size / config.batch_size), bar=config.progress and chief)
    callbacks = [keras.callbacks.TerminateOnNaN()]
    if display.live:
        callbacks.append(
            keras.callbacks.LambdaCallback(
                on_train_batch_end=lambda batch, logs: display.step(batch + 1, logs or {}),
                on_test_batch_end=lambda batch, logs: display.testing(batch + 1),
            )
        )
    with TensorBoardLog(run_dir, history) as board:
        for epoch in range(state["epoch"], config.epochs):
            # A fresh pipeline per epoch, seeded by the epoch: a resumed run sees the same
            # data order and augmentation as one that never stopped.
            train_ds = make_dataset(
                config.dataset,
                "train",
                config.batch_size,
                training=True,
                seed=config.seed * 100_003 + epoch,
                data_dir=config.data_dir,
                limit=train_size,
                reshuffle_each_iteration=False,
            )
            train_ds = _share(train_ds, strategy, train_size, config.batch_size)
            learning_rate = float(distiller.student_optimizer.learning_rate)
            started = time.perf_counter()
            display.begin_epoch(epoch + 1)
            if loop is not None:
                row = loop.run_epoch(train_ds, val_ds, test_ds, progress=display if display.live else None)
            else:
                # One call per epoch, so Keras's own bar would count epochs wrong (`Epoch 3/3`): the display draws.
                fitted = distiller.fit(
                    train_ds,
                    epochs=epoch + 1,
                    initial_epoch=epoch,
                    verbose=0,
                    shuffle=False,
                    callbacks=callbacks,
                )
                row = {k: float(v[-1]) for k, v in fitted.history.items()}
                for split, dataset in (("val", val_ds), ("test", test_ds)):
                    with evaluation_scope(strategy, info.splits[split], config.eval_batch_size):
                        logs = distiller.evaluate(dataset, verbose=0, return_dict=True, callbacks=callbacks)
                    row.update({f"{split}_{k}": float(v) for k, v in logs.items()})
            display.end_epoch()
            bad = [
                f"{key} = {row.get(key, math.nan)}"
                for key in ("loss", "val_loss", "test_loss")
                if not math.isfinite(row.get(key, math.nan))
            ]
            if bad:
                raise TrainingDiverged(
                    f"Training diverged in epoch {epoch + 1} ({', '.join(bad)}); stopping: {_kept(run_dir)}. "
                    f"Lower the learning rate (now {config.learning_rate})."
                )
            row.update(epoch=epoch + 1, lr=learning_rate, time_s=time.perf_counter() - started)
            history.append(row)
            summary = _summary(config, history, distiller, cohort)
            best = summary["best_student"]
            if has_fused and summary["fused"]["best_epoch"] == row["epoch"]:
                save_student_dir(
                    run_dir / FUSED_DIR, distiller.fused_classifier(), _fused_metadata(config, info, row, cohort)
                )
            if best["best_epoch"] == row["epoch"]:
                index = int(best["name"][1:])
                deployed = {key: best[key] for key in ("chosen_from", "reason")}
                save_student_dir(
                    run_dir / "best_student",
                    distiller.get_student(index),
                    _student_metadata(config, info, index, row, config.selection, cohort, deployed),
                )
            write_metrics(run_dir, history)
            save_checkpoint(run_dir, distiller, {"epoch": epoch + 1, "history": history})
            board.write(row)
            echo(_epoch_line(config, row, has_fused, display.seconds_left()))
    return history, distiller
