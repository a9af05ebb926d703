"""An epoch loop that the package drives itself, for strategies where `keras.Model.fit` fails.

With Keras 3.15 and TF 2.21, `fit` under `MultiWorkerMirroredStrategy` fails inside the
Keras trainer (`ValueError: Attempt to convert a value (PerReplica:{...})`, keras issue
#20585). Calling the distiller's own `train_step` through `strategy.run` inside a
`tf.function` works, and is what this loop does.
"""

from __future__ import annotations

from mfef_keras.training.progress import RunProgress


class CustomLoop:
    """Runs one epoch of training and evaluation of ``distiller`` under ``strategy``.

    Args:
        distiller: a compiled and prepared `OnlineDistiller` built in ``strategy.scope()``.
        strategy: the `tf.distribute` strategy.
    """

    def __init__(self, distiller, strategy):
        import tensorflow as tf

        self.distiller = distiller
        self.strategy = strategy
        self._train = tf.function(lambda batch: strategy.run(distiller.train_step, args=(batch,)))
        self._test = tf.function(lambda batch: strategy.run(distiller.test_step, args=(batch,)))

    def _run(self, step, dataset, progress: RunProgress | None, training: bool) -> dict:
        for metric in self.distiller.metrics:
            metric.reset_state()
        for i, batch in enumerate(self.strategy.experimental_distribute_dataset(dataset)):
            step(batch)
            if progress is not None and training:
                progress.step(i + 1, self._logs())
            elif progress is not None:
                progress.testing(i + 1)
        return self._logs()

    def _logs(self) -> dict:
        return {name: float(metric.result()) for name, metric in self.distiller._trackers.items()}

    def run_epoch(self, train_ds, val_ds, test_ds, progress: RunProgress | None = None) -> dict:
        """Train on ``train_ds``, then evaluate on ``val_ds`` and ``test_ds``; the logs named as the runner's.

        Args:
            train_ds: the epoch's training batches.
            val_ds: the validation batches (logs ``val_*``, as `fit` names them).
            test_ds: the test batches (logs ``test_*``).
            progress: the run's display, told of every step; None to tell nothing (and read no metric per step).
        """
        logs = self._run(self._train, train_ds, progress, training=True)
        for prefix, dataset in (("val", val_ds), ("test", test_ds)):
            logs.update(
                {f"{prefix}_{k}": v for k, v in self._run(self._test, dataset, progress, training=False).items()}
            )
        return logs
