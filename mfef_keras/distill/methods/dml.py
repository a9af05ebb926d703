"""Deep Mutual Learning (Zhang, Xiang, Hospedales and Lu, CVPR 2018).

Each student adds to its cross-entropy the mean KL divergence from every other student's prediction
(Eq. 2 and its n-student form, Eq. 3: ``L_i = CE_i + 1/(n-1) sum_{j != i} KL(p_j || p_i)``), at temperature 1
and with the peers' predictions detached, as in an alternating update done in one step.
"""

from __future__ import annotations

from mfef_keras.distill.losses import KDLoss
from mfef_keras.distill.methods.base import OnlineMethod, register_method


@register_method
class DeepMutualLearning(OnlineMethod):
    """Every student distils from each peer's plain (T = 1) prediction.

    Args:
        **kwargs: `OnlineMethod` arguments (the temperature does not apply: DML's KL is at T = 1).

    Example:
        >>> DeepMutualLearning().term_names(3)
        ['ce_s0', 'ce_s1', 'ce_s2', 'kd_s0', 'kd_s1', 'kd_s2']
    """

    name = "dml"
    description = "deep mutual learning: each student learns from every peer's prediction (Zhang et al. 2018)"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.mutual_kl = KDLoss(temperature=1.0, epsilon=0.0, name="mutual_kl")

    def distillation_terms(self, labels, logits: list, extras: dict, weight) -> dict:
        n = len(logits)
        return {
            f"kd_s{i}": sum(self.mutual_kl(logits[j], logits[i]) for j in range(n) if j != i) / (n - 1)
            for i in range(n)
        }
