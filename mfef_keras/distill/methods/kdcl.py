"""KDCL: online knowledge distillation via collaborative learning (Guo, Wang, Wu, Yu, Liang, Hu and Luo, CVPR 2020).

All students are taught by one soft target built from their logits on the batch (Sec. 3.2), and each adds
``T^2 KL(p_t || p_i)`` to its cross-entropy (Eq. 1), the target detached. Two of the paper's teachers:

- KDCL-Naive: for each example, the logits of the student with the lowest cross-entropy on it.
- KDCL-MinLogit (Eq. 3-4): each student's logits less its logit of the true class, ``z_i - z_{i,c}``, then the
  element-wise minimum over students: a teacher whose true class leads every other class by the largest margin
  any student gives it.

The paper also trains each student on its own augmentation of the image; here all see the same batch (the
cohort's usual input), which keeps the comparison with the other methods on equal data.
"""

from __future__ import annotations

from keras import ops

from mfef_keras.distill.methods.base import OnlineMethod, register_method


class _CollaborativeTeacher(OnlineMethod):
    """KDCL's shared form: every student distils from `teacher` of the batch."""

    def teacher(self, labels, logits: list):
        """The ensemble teacher's logits for the batch."""
        raise NotImplementedError

    def distillation_terms(self, labels, logits: list, extras: dict, weight) -> dict:
        target = self.teacher(labels, logits)
        return {f"kd_s{i}": self.kd(target, z) for i, z in enumerate(logits)}


def _true_class_logit(labels, z):
    one_hot = ops.one_hot(ops.cast(ops.reshape(labels, (-1,)), "int32"), ops.shape(z)[-1], dtype=z.dtype)
    return ops.sum(z * one_hot, axis=-1, keepdims=True)


@register_method
class KDCLNaive(_CollaborativeTeacher):
    """KDCL-Naive: the teacher is, example by example, the logits of the student with the lowest cross-entropy.

    Example:
        >>> KDCLNaive().term_names(2)
        ['ce_s0', 'ce_s1', 'kd_s0', 'kd_s1']
    """

    name = "kdcl-naive"
    description = "KDCL-Naive: each example taught by the student with the lowest cross-entropy on it (Guo 2020)"

    def teacher(self, labels, logits: list):
        stacked = ops.stack(logits)
        # Cross-entropy of each student on each example: log-sum-exp less the true-class logit.
        losses = ops.logsumexp(stacked, axis=-1) - ops.stack(
            [ops.squeeze(_true_class_logit(labels, z), -1) for z in logits]
        )
        chosen = ops.one_hot(ops.argmin(losses, axis=0), len(logits), dtype=stacked.dtype)
        return ops.einsum("bn,nbc->bc", chosen, stacked)


@register_method
class KDCLMinLogit(_CollaborativeTeacher):
    """KDCL-MinLogit: the element-wise minimum over students of the logits less the true-class logit.

    Example:
        >>> KDCLMinLogit().term_names(2)
        ['ce_s0', 'ce_s1', 'kd_s0', 'kd_s1']
    """

    name = "kdcl-minlogit"
    description = "KDCL-MinLogit: the minimum over students of each logit less the true-class logit (Guo 2020)"

    def teacher(self, labels, logits: list):
        return ops.min(ops.stack([z - _true_class_logit(labels, z) for z in logits]), axis=0)
