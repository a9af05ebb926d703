"""An epoch loop that the package drives itself, for strategies where `keras.Model.fit` fails.

With Keras 3.15 and TF 2.21, `fit` under `MultiWorkerMirroredStrategy` fails inside the
Keras trainer (`ValueError: Attempt to convert a value (PerReplica:{...})`, keras issue
#20585). Calling the distiller's own `train_step` through `strategy.run` inside a
`tf.function` works, and is what this loop does.
"""

from __future__ import annotations

import keras


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

    def _run(self, step, dataset, progress: bool, label: str) -> dict:
        for metric in self.distiller.metrics:
            metric.reset_state()
        steps = int(dataset.cardinality())
        bar = keras.utils.Progbar(steps if steps > 0 else None, verbose=1 if progress else 0, unit_name=label)
        for i, batch in enumerate(self.strategy.experimental_distribute_dataset(dataset)):
            step(batch)
            bar.update(i + 1)
        return {name: float(metric.result()) for name, metric in self.distiller._trackers.items()}

    def run_epoch(self, train_ds, test_ds, progress: bool = True) -> dict:
        """Train on ``train_ds`` then evaluate on ``test_ds``; the logs in `fit`'s naming (``val_`` for test)."""
        logs = self._run(self._train, train_ds, progress, "step")
        logs.update({f"val_{k}": v for k, v in self._run(self._test, test_ds, False, "step").items()})
        return logs
