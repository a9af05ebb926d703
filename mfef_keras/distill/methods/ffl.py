"""Feature Fusion Learning (Kim, Park, Kwak and Kwak, ICPR 2020), the fusion objective MFEF keeps.

A fusion module fuses the students' last-stage maps into a fused classifier (Sec. 3.1). The objective
(Eq. 4-6, and the official code) is ``sum_i CE(z_i) + CE(z_f) + w(t) [sum_i KD(z_i <- z_f) + KD(z_f <- mean_i z_i)]``:
the fused classifier teaches each student, the students' mean logits teach the fused classifier, every target
detached, and ``w(t)`` the sigmoid ramp-up of the official code.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from mfef_keras.distill.fusion_module import build_fusion_module
from mfef_keras.distill.methods.base import OnlineMethod, mean_logits, register_method


@register_method
class FeatureFusionLearning(OnlineMethod):
    """FFL: a plain fusion module (depthwise + pointwise conv) and the fused/ensemble distillation.

    Args:
        **kwargs: `OnlineMethod` arguments.

    Example:
        >>> FeatureFusionLearning().term_names(2)
        ['ce_s0', 'ce_s1', 'ce_fused', 'kd_s0', 'kd_s1', 'kd_fused', 'kd_weight']
    """

    name = "ffl"
    description = "feature fusion learning: a fusion head of the students' maps, distilled both ways (Kim et al. 2020)"
    ramps_up = True
    head_classifiers = ("fused",)

    def _fusion_settings(self) -> dict:
        """The `build_fusion_module` arguments of the method's head: FFL's plain module, no MFEF part."""
        return dict(multi_scale=False, channel_attention=False, spatial_attention=False)

    def build_head(
        self, feature_shapes: Sequence[Sequence[int | None]], num_classes: int, sync_batchnorm: bool = False
    ) -> keras.Model:
        return build_fusion_module(
            feature_shapes, num_classes, sync_batchnorm=sync_batchnorm, **self._fusion_settings()
        )

    def head_outputs(self, head: keras.Model, features: list, logits: list, training=None) -> dict:
        return {"fused": ops.cast(head(features, training=training), "float32")}

    def _kd_names(self, num_students: int) -> list[str]:
        return super()._kd_names(num_students) + ["kd_fused"]

    def distillation_terms(self, labels, logits: list, extras: dict, weight) -> dict:
        fused = extras["fused"]
        terms = {f"kd_s{i}": self.kd(fused, z) for i, z in enumerate(logits)}
        terms["kd_fused"] = self.kd(mean_logits(logits), fused)
        return terms
