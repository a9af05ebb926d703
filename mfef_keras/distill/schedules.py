"""Learning-rate schedules expressed in epochs (the recipe's "x0.1 at epochs 150 and 225")."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="mfef_keras")
class MultiStepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Step decay: the rate is multiplied by ``gamma`` at each epoch in ``milestones``.

    Args:
        initial_learning_rate: rate before the first milestone.
        steps_per_epoch: optimizer steps in one epoch (to turn steps into epochs).
        milestones: epochs (from 0) at which the rate is multiplied by ``gamma``.
        gamma: the factor applied at each milestone.

    Example:
        >>> schedule = MultiStepDecay(0.1, steps_per_epoch=391, milestones=(150, 225))
        >>> round(float(schedule(391 * 200)), 6)
        0.01
    """

    def __init__(
        self,
        initial_learning_rate: float,
        steps_per_epoch: int,
        milestones: Sequence[float] = (150, 225),
        gamma: float = 0.1,
    ):
        if int(steps_per_epoch) < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch!r}.")
        self.initial_learning_rate = float(initial_learning_rate)
        self.steps_per_epoch = int(steps_per_epoch)
        self.milestones = tuple(float(m) for m in milestones)
        self.gamma = float(gamma)

    def __call__(self, step):
        epoch = ops.floor(ops.cast(step, "float32") / self.steps_per_epoch)
        passed = sum(ops.cast(epoch >= m, "float32") for m in self.milestones) if self.milestones else 0.0
        return self.initial_learning_rate * ops.power(self.gamma, passed)

    def get_config(self):
        return dict(
            initial_learning_rate=self.initial_learning_rate,
            steps_per_epoch=self.steps_per_epoch,
            milestones=list(self.milestones),
            gamma=self.gamma,
        )
