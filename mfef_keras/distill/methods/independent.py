"""Independent training: every student learns from the labels alone (the baseline the methods must beat)."""

from __future__ import annotations

from mfef_keras.distill.methods.base import OnlineMethod, register_method


@register_method
class Independent(OnlineMethod):
    """Each student trained alone with cross-entropy; one student is plain training.

    Example:
        >>> Independent().term_names(1)
        ['ce_s0']
    """

    name = "independent"
    description = "each student trained alone on the labels: the plain-training baseline"
    min_students = 1

    def _kd_names(self, num_students: int) -> list[str]:
        return []
