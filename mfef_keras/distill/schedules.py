"""Learning-rate schedules expressed in epochs (the recipe's "x0.1 at epochs 150 and 225")."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import keras
from keras import ops

from mfef_keras import recipe


def checked_number(name: str, value, minimum: float = 0.0, inclusive: bool = True) -> float:
    """``value`` as a float, or a ValueError naming it and what is allowed (finite, >= or > ``minimum``)."""
    finite = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not finite or value < minimum or (value == minimum and not inclusive):
        raise ValueError(f"{name} must be a finite number {'>=' if inclusive else '>'} {minimum:g}, got {value!r}.")
    return float(value)


def checked_steps_per_epoch(value) -> int:
    """``value`` as an int, or a ValueError unless it is an integer >= 1."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"steps_per_epoch must be an integer >= 1, got {value!r}.")
    return int(value)


def checked_milestones(milestones: Sequence[float]) -> tuple[float, ...]:
    """The milestones as floats, or a ValueError unless they are epochs: finite numbers >= 0."""
    values = list(milestones) if isinstance(milestones, Sequence) and not isinstance(milestones, str) else None
    if values is None or not all(
        isinstance(m, numbers.Real) and not isinstance(m, bool) and math.isfinite(m) and m >= 0 for m in values
    ):
        raise ValueError(f"lr_milestones must be a sequence of epochs (finite numbers >= 0), got {milestones!r}.")
    return tuple(float(m) for m in values)


def epoch_at_step(step, steps_per_epoch: int):
    """The epoch (from 0) that optimizer step ``step`` (from 0) belongs to, as an int32 tensor.

    Integer division, so it stays exact up to 2**31 steps (float32 is not past 2**24). int32, not
    int64: JAX has no int64 unless x64 is switched on, and would truncate with a warning.

    Example:
        >>> int(epoch_at_step(781, steps_per_epoch=391))
        1
    """
    return ops.floor_divide(ops.cast(step, "int32"), int(steps_per_epoch))


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
        milestones: Sequence[float] = recipe.LR_MILESTONES,
        gamma: float = 0.1,
    ):
        self.initial_learning_rate = checked_number("initial_learning_rate", initial_learning_rate, inclusive=False)
        self.steps_per_epoch = checked_steps_per_epoch(steps_per_epoch)
        self.milestones = checked_milestones(milestones)
        self.gamma = checked_number("gamma", gamma, inclusive=False)

    def __call__(self, step):
        epoch = ops.cast(epoch_at_step(step, self.steps_per_epoch), "float32")
        passed = sum(ops.cast(epoch >= m, "float32") for m in self.milestones) if self.milestones else 0.0
        return self.initial_learning_rate * ops.power(self.gamma, passed)

    def get_config(self):
        return dict(
            initial_learning_rate=self.initial_learning_rate,
            steps_per_epoch=self.steps_per_epoch,
            milestones=list(self.milestones),
            gamma=self.gamma,
        )


@keras.saving.register_keras_serializable(package="mfef_keras")
class CosineEpochDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Cosine annealing by epoch: ``lr_0 * (1 + cos(pi * e / E)) / 2`` through epoch ``e`` of ``E``.

    PyTorch's ``CosineAnnealingLR(T_max=E, eta_min=0)`` stepped once per epoch, as the CIFAR recipes use it:
    constant within an epoch, ``lr_0`` in the first, and close to 0 in the last.

    Args:
        initial_learning_rate: rate of the first epoch.
        steps_per_epoch: optimizer steps in one epoch (to turn steps into epochs).
        epochs: ``E``, the epochs the rate anneals over (the run's length).

    Example:
        >>> schedule = CosineEpochDecay(0.1, steps_per_epoch=10, epochs=4)
        >>> [round(float(schedule(10 * e)), 4) for e in range(4)]
        [0.1, 0.0854, 0.05, 0.0146]
    """

    def __init__(self, initial_learning_rate: float, steps_per_epoch: int, epochs: int):
        self.initial_learning_rate = checked_number("initial_learning_rate", initial_learning_rate, inclusive=False)
        self.steps_per_epoch = checked_steps_per_epoch(steps_per_epoch)
        if not isinstance(epochs, numbers.Integral) or isinstance(epochs, bool) or epochs < 1:
            raise ValueError(f"The cosine schedule's epochs must be an integer >= 1, got {epochs!r}.")
        self.epochs = int(epochs)

    def __call__(self, step):
        epoch = ops.minimum(ops.cast(epoch_at_step(step, self.steps_per_epoch), "float32"), float(self.epochs))
        return self.initial_learning_rate * 0.5 * (1.0 + ops.cos(math.pi * epoch / self.epochs))

    def get_config(self):
        return dict(
            initial_learning_rate=self.initial_learning_rate, steps_per_epoch=self.steps_per_epoch, epochs=self.epochs
        )
