"""TensorBoard event files of a run: every loss term, accuracy, the learning rate and w(t), per epoch.

Written with `tf.summary.write` and the scalars plugin's metadata, so the `tensorboard` package is not needed
to write them, only to view them (``tensorboard --logdir <run>/tensorboard``). Where TensorFlow is not installed
(the ``jax`` extra) no event files are written, and a note says so: ``metrics.json``/``metrics.csv`` and
``curves.png`` hold the same values.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mfef_keras._tensorflow import tensorflow_installed

TENSORBOARD_DIR = "tensorboard"
SPLITS = ("train", "validation", "test")
# Metrics-row prefix -> the split (and writer) its values go to; the rest is training.
_PREFIXES = {"val_": "validation", "test_": "test"}
# Bookkeeping columns of a metrics row, not measurements.
_NOT_LOGGED = {"epoch", "time_s"}


def scalars(row: dict) -> dict[str, dict[str, float]]:
    """The TensorBoard scalars of one metrics row, by split: the same tag for a train, validation and test value.

    Args:
        row: a row of ``metrics.json`` (``loss``, ``val_loss``, ``test_loss``, ``lr``...).
    """
    scalars = {split: {} for split in SPLITS}
    for key, value in row.items():
        prefix = next((p for p in _PREFIXES if key.startswith(p)), None)
        if prefix is None:
            if key not in _NOT_LOGGED:
                scalars["train"]["learning_rate" if key == "lr" else key] = value
        # w(t) is the schedule of the epoch, the same in training and evaluation: logged once, with training.
        elif key[len(prefix) :] != "kd_weight":
            scalars[_PREFIXES[prefix]][key[len(prefix) :]] = value
    return scalars


def _last_step(folder: Path) -> int:
    """The largest step of the summaries in the event files of ``folder``; 0 if there are none."""
    import tensorflow as tf

    last = 0
    for path in sorted(folder.glob("events.out.tfevents.*")):
        try:
            for event in tf.compat.v1.train.summary_iterator(str(path)):
                if event.HasField("summary"):
                    last = max(last, event.step)
        except tf.errors.DataLossError:
            # A record cut short by a killed run; the records before it are whole.
            pass
    return last


class TensorBoardLog:
    """Event files under ``<run_dir>/tensorboard/{train,validation,test}``, one step per epoch (from 1).

    Rows of ``history`` that the event files lack are written first: a resumed run continues the curves
    without writing a step twice, even when it was killed between its checkpoint and its event write.
    Without TensorFlow it writes nothing (``enabled`` is False) and says so on stderr.

    Args:
        run_dir: the run directory.
        history: the metrics rows recorded so far (a resumed run's).
    """

    def __init__(self, run_dir: Path, history: list[dict]):
        self._folder = Path(run_dir) / TENSORBOARD_DIR
        # Opened on the first step to log: each writer starts a file, which a finished run run again would not need.
        self._writers = {}
        self.enabled = tensorflow_installed()
        if not self.enabled:
            print(
                f"note: TensorFlow is not installed, so no TensorBoard event files are written under {self._folder}; "
                "metrics.json, metrics.csv and curves.png hold the same values.",
                file=sys.stderr,
            )
            return
        from tensorflow.core.framework import summary_pb2

        # Per split: a run killed between the flushes has one step more in train than in the others.
        self._done = {split: _last_step(self._folder / split) for split in SPLITS}
        self._metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
        )
        for row in history:
            self.write(row)

    def write(self, row: dict) -> None:
        """Log ``row`` (a metrics row) at step ``row["epoch"]`` and flush it; a step already logged is skipped."""
        if not self.enabled:
            return
        import tensorflow as tf

        for split, values in scalars(row).items():
            if row["epoch"] <= self._done[split]:
                continue
            self._done[split] = row["epoch"]
            if split not in self._writers:
                self._writers[split] = tf.summary.create_file_writer(str(self._folder / split))
            writer = self._writers[split]
            with writer.as_default():
                for tag, value in values.items():
                    tf.summary.write(tag, tf.constant(value, tf.float32), step=row["epoch"], metadata=self._metadata)
            writer.flush()

    def close(self) -> None:
        """Close the event files."""
        for writer in self._writers.values():
            writer.close()

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
