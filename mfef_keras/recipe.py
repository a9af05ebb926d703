"""FFL's training recipe, which the MFEF paper trains with: the one place its numbers are written.

The run config's defaults (`mfef_keras.training.config.TrainConfig`) and the library's (`OnlineDistiller`,
`KDLoss`, `MultiStepDecay`) both read them, and a run shorter than the recipe's 300 epochs scales its ramp-up
and learning-rate milestones from them.
"""

from __future__ import annotations

EPOCHS = 300
LEARNING_RATE = 0.1
# The rate is multiplied by LR_DECAY at the start of each of these epochs (counted from 0).
LR_MILESTONES = (150, 225)
LR_DECAY = 0.1
STUDENT_WEIGHT_DECAY = 1e-4
FUSION_WEIGHT_DECAY = 1e-5
TEMPERATURE = 3.0
# The KD weight w(t) reaches 1 after this many epochs.
RAMPUP_EPOCHS = 80


def scaled_rampup_epochs(epochs: float) -> float:
    """The recipe's ramp-up (80 of its 300 epochs) scaled to a run of ``epochs``.

    Args:
        epochs: the run's length in epochs.
    """
    return float(epochs) * RAMPUP_EPOCHS / EPOCHS


def scaled_lr_milestones(epochs: int) -> list[int]:
    """The recipe's milestones (150 and 225 of 300) scaled to a run of ``epochs``, each at most once.

    Scaled milestones that fall on the same epoch, on the first or past the last are dropped: a run of 3 epochs
    decays once (at 2), a run of 1 never.

    Args:
        epochs: the run's length in epochs.
    """
    scaled = (round(epochs * milestone / EPOCHS) for milestone in LR_MILESTONES)
    return [m for m in dict.fromkeys(scaled) if 0 < m < epochs]
