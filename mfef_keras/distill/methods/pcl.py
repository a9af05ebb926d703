"""PCL: peer collaborative learning for online knowledge distillation (Wu and Gong, AAAI 2021).

Two teachers distil into every peer (the paper's method section, arXiv:2006.04147; its equations are named
here by what they define):

- The peer ensemble teacher: a classifier on the concatenation of the peers' (globally pooled) features,
  trained by its own cross-entropy, whose soft predictions teach each peer, ``L_pe = sum_i T^2 KL(p_e || p_i)``.
  It is the method's head, output ``"fused"``.
- The peer mean teachers: a temporal mean of each peer, weights ``theta'_t = a theta'_{t-1} + (1 - a) theta_t``
  after every step with ``a = 0.999`` (as mean teacher; the option ``ema_decay``; the true average over the
  first ``1 / (1 - a)`` steps, ``a_t = min(1 - 1/t, a)``, as mean teacher's code). Each peer learns from the
  mean teachers of the *other* peers, ``L_pm = sum_i 1/(m-1) sum_{j != i} T^2 KL(p'_j || p_i)``.

The objective is ``sum_i CE(z_i) + CE(z_e) + w(t) (L_pe + L_pm)``, ``w(t)`` the sigmoid ramp-up of mean
teacher (FFL's, see ``ramps_up``), on both distillation terms as in the public reproduction
(shaoeric/Peer-Collaborative-Learning-for-Online-Knowledge-Distillation); every teacher's predictions are
detached, and the ensemble classifier's cross-entropy trains the peers' features too.

The temporal means live in a non-trainable copy of the students' network (`build_averages`), saved and
restored with the run's checkpoints; every floating-point weight is averaged, the BatchNorm statistics
included, and the copy runs in inference mode, so its predictions are those of the averaged network (the
reproduction runs its mean network in training mode, on the batch's statistics; averaged statistics keep the
teacher a function of its weights alone, on every backend and replica count).
The deployed students are the trained peers, not their temporal means: the paper deploys a temporal-mean
peer, which this package does not export yet.

As for KDCL, the paper's different augmentation of each peer's input is left out: every student sees the
same batch. Its shared low layers are ``--topology shared_trunk``.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers, ops

from mfef_keras.distill.methods.base import MethodOption, OnlineMethod, register_method

# Prefixed to the copy's layer names: checkpoints tell variables apart by their layers' names.
MEAN_PREFIX = "mean_"


def _renamed(layer: keras.layers.Layer) -> keras.layers.Layer:
    return layer.__class__.from_config({**layer.get_config(), "name": MEAN_PREFIX + layer.name})


@register_method
class PeerCollaborativeLearning(OnlineMethod):
    """PCL: a peer ensemble teacher and the other peers' temporal means distil into each peer.

    Args:
        ema_decay: the temporal means' decay ``a`` (option; default the paper's 0.999).
        **kwargs: `OnlineMethod` arguments.

    Example:
        >>> PeerCollaborativeLearning(ema_decay=0.99).ema_decay
        0.99
        >>> PeerCollaborativeLearning().term_names(2)
        ['ce_s0', 'ce_s1', 'ce_fused', 'kd_s0', 'kd_s1', 'kd_mean_s0', 'kd_mean_s1', 'kd_weight']
    """

    name = "pcl"
    description = "peer collaborative learning: a peer ensemble teacher and temporal-mean peers (Wu and Gong 2021)"
    ramps_up = True
    head_classifiers = ("fused",)
    options = {
        # The paper's, from mean teacher; 1 would freeze the means at the first step's weights.
        "ema_decay": MethodOption(
            0.999, "decay a of the peers' temporal means (EMA)", lambda a: 0 <= a < 1, ">= 0 and < 1"
        )
    }

    def build_head(
        self, feature_shapes: Sequence[Sequence[int | None]], num_classes: int, sync_batchnorm: bool = False
    ) -> keras.Model:
        inputs = [keras.Input(tuple(shape[1:]), name=f"s{i}_feature_map") for i, shape in enumerate(feature_shapes)]
        pooled = [layers.GlobalAveragePooling2D(name=f"s{i}_ensemble_pool")(x) for i, x in enumerate(inputs)]
        joined = layers.Concatenate(name="ensemble_concat")(pooled)
        # Float32 like every classifier output under mixed precision.
        logits = layers.Dense(num_classes, dtype="float32", name="ensemble_classifier")(joined)
        return keras.Model(inputs, logits, name="peer_ensemble")

    def head_outputs(self, head: keras.Model, features: list, logits: list, training=None) -> dict:
        return {"fused": ops.cast(head(features, training=training), "float32")}

    def build_averages(self, students: keras.Model) -> keras.Model:
        averages = keras.models.clone_model(students, clone_function=_renamed, recursive=True)
        averages.set_weights(students.get_weights())
        # Trained by no optimiser: `update_averages` alone moves its weights.
        averages.trainable = False
        return averages

    def average_outputs(self, averages: keras.Model, images) -> dict:
        outputs = averages(images, training=False)
        return {f"mean_s{i}": ops.stop_gradient(ops.cast(z, "float32")) for i, z in enumerate(outputs[1::2])}

    def update_averages(self, averages: keras.Model, students: keras.Model, step) -> None:
        decay = ops.minimum(1.0 - 1.0 / ops.cast(step, "float32"), self.ema_decay)
        for average, weight in zip(averages.weights, students.weights):
            # Integer state (a seed generator's) is no weight to average.
            if keras.backend.is_float_dtype(average.dtype):
                rate = ops.cast(decay, average.dtype)
                average.assign(rate * average + (1.0 - rate) * ops.cast(weight, average.dtype))

    def _kd_names(self, num_students: int) -> list[str]:
        return super()._kd_names(num_students) + [f"kd_mean_s{i}" for i in range(num_students)]

    def distillation_terms(self, labels, logits: list, extras: dict, weight) -> dict:
        terms = {f"kd_s{i}": self.kd(extras["fused"], z) for i, z in enumerate(logits)}
        others = len(logits) - 1
        for i, z in enumerate(logits):
            teachers = [extras[f"mean_s{j}"] for j in range(len(logits)) if j != i]
            terms[f"kd_mean_s{i}"] = sum(self.kd(teacher, z) for teacher in teachers) / others
        return terms
