"""One epoch of a run: its training data, the training, and the evaluation that make its metrics row."""

from __future__ import annotations

import math
import time

from mfef_keras.training.config import TrainConfig
from mfef_keras.training.custom_loop import CustomLoop
from mfef_keras.training.devices import batch_share, evaluation_scope
from mfef_keras.training.progress import RunProgress, format_duration


def _share(batches, strategy, examples: int, batch_size: int):
    """``batches``, or this process's part of each of them in a multi-process JAX run (see `batch_share`)."""
    from mfef_keras.data.process_share import process_share

    share = batch_share(strategy, examples, batch_size)
    return batches if share is None else process_share(batches, *share)


class EpochTrainer:
    """Trains a distiller one epoch at a time and scores it on the validation and test splits.

    Args:
        config: the run's config.
        info: the dataset's `DatasetInfo`.
        strategy: the distribution strategy the distiller was built under.
        distiller: the compiled and prepared `OnlineDistiller`.
        train_size: the training images each epoch sees.
        display: the run's progress display.
    """

    def __init__(self, config: TrainConfig, info, strategy, distiller, train_size: int, display: RunProgress):
        import keras

        from mfef_keras.data import make_dataset

        self.config, self.info, self.strategy, self.distiller = config, info, strategy, distiller
        self.train_size, self.display = train_size, display
        # tf.distribute's multi-worker strategy needs the package's own loop; JAX's processes train through fit.
        multiworker_tf = config.strategy == "multiworker" and keras.backend.backend() == "tensorflow"
        self.loop = CustomLoop(distiller, strategy) if multiworker_tf else None
        self.val_ds, self.test_ds = (
            _share(
                make_dataset(config.dataset, split, config.eval_batch_size, training=False, data_dir=config.data_dir),
                strategy,
                info.splits[split],
                config.eval_batch_size,
            )
            for split in ("val", "test")
        )
        self.callbacks = [keras.callbacks.TerminateOnNaN()]
        if display.live:
            self.callbacks.append(
                keras.callbacks.LambdaCallback(
                    on_train_batch_end=lambda batch, logs: display.step(batch + 1, logs or {}),
                    on_test_batch_end=lambda batch, logs: display.testing(batch + 1),
                )
            )

    def _train_dataset(self, epoch: int):
        from mfef_keras.data import make_dataset

        config = self.config
        # A fresh pipeline per epoch, seeded by the epoch: a resumed run sees the same
        # data order and augmentation as one that never stopped.
        train_ds = make_dataset(
            config.dataset,
            "train",
            config.batch_size,
            training=True,
            seed=config.seed * 100_003 + epoch,
            data_dir=config.data_dir,
            limit=self.train_size,
            reshuffle_each_iteration=False,
        )
        return _share(train_ds, self.strategy, self.train_size, config.batch_size)

    def _fit_and_evaluate(self, epoch: int, train_ds) -> dict:
        # One call per epoch, so Keras's own bar would count epochs wrong (`Epoch 3/3`): the display draws.
        fitted = self.distiller.fit(
            train_ds,
            epochs=epoch + 1,
            initial_epoch=epoch,
            verbose=0,
            shuffle=False,
            callbacks=self.callbacks,
        )
        row = {k: float(v[-1]) for k, v in fitted.history.items()}
        for split, dataset in (("val", self.val_ds), ("test", self.test_ds)):
            with evaluation_scope(self.strategy, self.info.splits[split], self.config.eval_batch_size):
                logs = self.distiller.evaluate(dataset, verbose=0, return_dict=True, callbacks=self.callbacks)
            row.update({f"{split}_{k}": float(v) for k, v in logs.items()})
        return row

    def train(self, epoch: int) -> dict:
        """Train epoch ``epoch`` (from 0) and evaluate after it.

        Args:
            epoch: the epoch, counted from 0.

        Returns:
            Its metrics row: the training logs, ``val_*`` and ``test_*`` logs, and ``epoch`` (from 1), ``lr``
            (the learning rate it started with) and ``time_s``.
        """
        train_ds = self._train_dataset(epoch)
        learning_rate = float(self.distiller.student_optimizer.learning_rate)
        started = time.perf_counter()
        self.display.begin_epoch(epoch + 1)
        if self.loop is not None:
            progress = self.display if self.display.live else None
            row = self.loop.run_epoch(train_ds, self.val_ds, self.test_ds, progress=progress)
        else:
            row = self._fit_and_evaluate(epoch, train_ds)
        self.display.end_epoch()
        row.update(epoch=epoch + 1, lr=learning_rate, time_s=time.perf_counter() - started)
        return row


def non_finite_losses(row: dict) -> list[str]:
    """``"<key> = <value>"`` for each of the row's losses that is NaN, infinite or missing.

    Args:
        row: an epoch's metrics row.
    """
    return [
        f"{key} = {row.get(key, math.nan)}"
        for key in ("loss", "val_loss", "test_loss")
        if not math.isfinite(row.get(key, math.nan))
    ]


def epoch_line(config: TrainConfig, row: dict, has_fused: bool, seconds_left: float | None) -> str:
    """The line a run prints after an epoch: its loss, learning rate, each model's accuracies and time.

    Args:
        config: the run's config.
        row: the epoch's metrics row.
        has_fused: whether the method has a fused classifier, whose accuracies are shown too.
        seconds_left: the run's estimated time left, or None.
    """
    names = [f"s{i}" for i in range(config.num_students)] + (["fused"] if has_fused else []) + ["ensemble"]
    accs = "  ".join(f"{n} {100 * row[f'val_acc_{n}']:.2f}/{100 * row[f'test_acc_{n}']:.2f}" for n in names)
    left = f", ETA {format_duration(seconds_left)}" if seconds_left and row["epoch"] < config.epochs else ""
    return (
        f"epoch {row['epoch']}/{config.epochs}  loss {row['loss']:.4f}  lr {row['lr']:.4g}  "
        f"val/test top-1 % {accs}  ({row['time_s']:.1f} s{left})"
    )
