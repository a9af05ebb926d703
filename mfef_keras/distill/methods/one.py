"""ONE: knowledge distillation by on-the-fly native ensemble (Lan, Zhu and Gong, NeurIPS 2018).

A gate gives each branch a weight, ``g = softmax(W_g x)`` (Eq. 1), and the gated sum of the branches' logits
``z_e = sum_i g_i z_i`` (Eq. 2) is the ensemble teacher. The objective (Eq. 6) is
``sum_i CE(z_i) + CE(z_e) + T^2 sum_i KL(p_e || p_i)``, the teacher's soft targets detached in the KL terms.

In the paper the branches share their low layers and the gate reads the shared feature at the branch point.
A cohort here may share nothing (and may mix networks), so the gate reads every student's globally pooled
last-stage map, concatenated; with ``--topology shared_trunk`` the students share their trunk as in ONE.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers, ops

from mfef_keras.distill.methods.base import OnlineMethod, register_method


@register_method
class OnTheFlyNativeEnsemble(OnlineMethod):
    """ONE: a learned gate weighs the students' logits into the ensemble teacher that distils into each.

    Example:
        >>> OnTheFlyNativeEnsemble().term_names(2)
        ['ce_s0', 'ce_s1', 'ce_fused', 'kd_s0', 'kd_s1']
    """

    name = "one"
    description = "on-the-fly native ensemble: a learned gate weighs the students into the teacher (Lan et al. 2018)"
    head_classifiers = ("fused",)

    def build_head(
        self, feature_shapes: Sequence[Sequence[int | None]], num_classes: int, sync_batchnorm: bool = False
    ) -> keras.Model:
        inputs = [keras.Input(tuple(shape[1:]), name=f"s{i}_feature_map") for i, shape in enumerate(feature_shapes)]
        pooled = [layers.GlobalAveragePooling2D(name=f"s{i}_gate_pool")(x) for i, x in enumerate(inputs)]
        joined = layers.Concatenate(name="gate_concat")(pooled) if len(pooled) > 1 else pooled[0]
        # Float32 like every classifier output, so the softmax weights are exact under mixed precision.
        gate = layers.Dense(len(feature_shapes), activation="softmax", dtype="float32", name="gate")(joined)
        return keras.Model(inputs, gate, name="gate")

    def head_outputs(self, head: keras.Model, features: list, logits: list, training=None) -> dict:
        weights = ops.cast(head(features, training=training), "float32")
        return {"fused": ops.einsum("bn,nbc->bc", weights, ops.stack(logits))}

    def distillation_terms(self, labels, logits: list, extras: dict, weight) -> dict:
        return {f"kd_s{i}": self.kd(extras["fused"], z) for i, z in enumerate(logits)}
