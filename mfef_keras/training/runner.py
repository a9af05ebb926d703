"""`train(config)`: a whole training run with its run directory, checkpoints and resume."""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mfef_keras._outputs import disk_error_message
from mfef_keras.atomic_files import write_json_atomic
from mfef_keras.training.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from mfef_keras.training.config import TrainConfig
from mfef_keras.training.devices import (
    configure_cpu_devices,
    is_chief,
    make_strategy,
    shared_train_size,
)
from mfef_keras.training.environment import describe_environment
from mfef_keras.training.epoch import EpochTrainer, epoch_line, non_finite_losses
from mfef_keras.training.plots import plot_training_curves
from mfef_keras.training.progress import RunProgress
from mfef_keras.training.run_directory import (
    RunDirectoryError,
    check_data_fingerprint,
    check_run_dir,
    data_fingerprint,
    extended_config,
    format_summary,
    read_run_json,
    sweep_leftovers,
    write_config,
    write_data_fingerprint,
    write_metrics,
)
from mfef_keras.training.run_lock import run_directory_lock
from mfef_keras.training.run_students import cohort_of, keep_last_students, keep_selected, run_summary
from mfef_keras.training.tensorboard_log import TensorBoardLog


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class RunResult:
    run_dir: Path
    history: list[dict]
    summary: dict


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
    from mfef_keras.training.model_source import resolve_model_source

    resolved = resolve_model_source(source)
    if resolved.card is None:
        raise ValueError(
            f"The teacher {resolved.description} has no metadata.json naming its dataset; give a run, a student "
            "directory or a zoo name, whose card says what data and normalisation the teacher expects."
        )
    theirs = resolved.card.dataset
    keys = ("name", "num_classes", "image_shape", "mean", "std")
    differing = [key for key in keys if getattr(theirs, key) != getattr(info, key)]
    if differing:
        raise ValueError(
            f"The teacher {resolved.description} was trained on other data than this run's {info.name}: its "
            + ", ".join(f"{key} {getattr(theirs, key)!r} (here {getattr(info, key)!r})" for key in differing)
            + ". A teacher must take the students' inputs and predict their classes."
        )
    return resolved.load()


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
        cohort = cohort_of(config, distiller)
        summary = run_summary(config, history, distiller, cohort)
        keep_last_students(run_dir, distiller, config, info, history, cohort)
        write_json_atomic(run_dir / "summary.json", summary)
        plot_training_curves(history, run_dir / "curves.png")
    echo(format_summary(summary))
    echo(f"Run directory: {run_dir}")
    return RunResult(run_dir=run_dir, history=history, summary=summary)


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


def _start_or_resume(
    config: TrainConfig, info, run_dir: Path, train_size: int, state: dict | None, echo: Callable[[str], None]
) -> dict:
    """Record a new run (config, data, environment) or where a resumed one goes on; returns the state to go on from.

    Args:
        config: the run's config.
        info: the dataset's `DatasetInfo`.
        run_dir: the run directory.
        train_size: the training images each epoch sees.
        state: the restored checkpoint's state (``epoch`` and ``history``), or None for a new run.
        echo: where to tell the user.
    """
    if state is None:
        write_config(run_dir, config)
        write_data_fingerprint(run_dir, data_fingerprint(info, train_size))
        write_json_atomic(run_dir / "environment.json", describe_environment(config.seed))
        # Before the first epoch's line, which waits for tracing and a whole epoch.
        echo(f"Training {config.epochs} epoch{'s' if config.epochs != 1 else ''} in {run_dir}.")
        return {"epoch": 0, "history": []}
    if state["epoch"] < config.epochs:
        echo(f"Resuming {run_dir} after epoch {state['epoch']} of {config.epochs}.")
        # The same config, or the one a longer extension wrote (see `extended_config`).
        write_config(run_dir, config)
        _record_resume(run_dir, state["epoch"], config.seed)
    return state


def _check_finite(row: dict, run_dir: Path, config: TrainConfig) -> None:
    """Stop a run whose epoch (metrics row ``row``) ended with a NaN or infinite loss; its last checkpoint stays."""
    bad = non_finite_losses(row)
    if bad:
        raise TrainingDiverged(
            f"Training diverged in epoch {row['epoch']} ({', '.join(bad)}); stopping: {_kept(run_dir)}. "
            f"Lower the learning rate (now {config.learning_rate})."
        )


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
    """Build the distiller, restore its checkpoint and train the remaining epochs; returns (history, distiller).

    After each epoch the selected models are kept, then the metrics, then the checkpoint: a run killed at any
    point resumes from the last checkpoint and redoes what followed it.
    """
    import keras

    steps_per_epoch = math.ceil(train_size / config.batch_size)
    distiller = _build(config, info, strategy, steps_per_epoch)
    has_fused = distiller.online_method.has_fused_classifier()
    cohort = cohort_of(config, distiller)
    restored = load_checkpoint(checkpoint_source, distiller)
    # Told once per run: a run may resume on another backend than it started on.
    replicas = strategy.num_replicas_in_sync
    echo(
        f"Keras backend: {keras.backend.backend()}"
        + (f", data-parallel over {replicas} devices." if replicas > 1 else ".")
    )
    state = _start_or_resume(config, info, run_dir, train_size, restored, echo)
    history = _epochs_from_one(state["history"])
    display = RunProgress(config.epochs, steps_per_epoch, bar=config.progress and chief)
    epochs = EpochTrainer(config, info, strategy, distiller, train_size, display)
    with TensorBoardLog(run_dir, history) as board:
        for epoch in range(state["epoch"], config.epochs):
            row = epochs.train(epoch)
            _check_finite(row, run_dir, config)
            history.append(row)
            keep_selected(run_dir, distiller, config, info, history, cohort)
            write_metrics(run_dir, history)
            save_checkpoint(run_dir, distiller, {"epoch": epoch + 1, "history": history})
            board.write(row)
            echo(epoch_line(config, row, has_fused, display.seconds_left()))
    return history, distiller
