"""OKDDip: online knowledge distillation with diverse peers (Chen, Mei, Wang, Feng and Chen, AAAI 2020).

The cohort is ``m`` auxiliary peers and one group leader; here the leader is the **last** student and the
peers are the others, so OKDDip needs three students at least (two peers, whose attention has something to
weigh). The paper deploys the leader; the run deploys, as for every method, the best of the students with
the fewest parameters, so put the network to deploy last and make it the smallest (``--backbone
resnet32,resnet32,resnet8``): among equal students the best one is deployed, peer or leader.

The two-level distillation of the paper's method section (arXiv:1912.00350; its equations are named here by
what they define):

- First level (the aggregation, the attention and ``L_dis1``): each peer ``a`` has its own target, the
  attention-weighted sum of the peers' soft predictions ``t_a = sum_b alpha_ab p_b`` with
  ``p_b = softmax(z_b / T)``, and the attention ``alpha_ab = softmax_b(L(h_a)^T E(h_b))`` from two learned
  linear maps (query ``L``, key ``E``, no bias) of the peers' pooled last-stage features ``h``. The term is
  ``T^2 KL(t_a || p_a)``.
- Second level (``L_dis2``): the leader distils from the peers' ensemble, ``T^2 KL(mean_a p_a || p_l)``.

The objective (the overall loss, as in the official train_GL.py) is every student's cross-entropy plus
``w(t)`` times the KD terms, ``w(t)`` the sigmoid ramp-up the official code takes from mean teacher (FFL's).

What is detached: the peers' predictions ``p_b`` inside every target and the leader's whole target, so each
KL term moves its own student (as every other method here) and no student is pulled toward another through
a target; the attention weights are **not** detached, so the query and key maps learn from the first-level
terms (the gradient of ``KL(t_a || p_a)`` with respect to ``alpha_a``). The official code detaches nothing,
so there the targets' gradients also reach the peers' (and, through the leader's target, all peers') logits.

Beside that, where the paper and the official code differ, this follows the paper: targets are aggregates
of probabilities (the code weighs logits, then softens), and the leader's target is the mean of the peers'
probabilities (the code's is the mean of their logits). The query and key width is the peers' channels / 8,
as in the code (the option ``projection_factor``); peers of equal width share ``L`` and ``E`` (the paper),
peers of different widths (a mixed cohort) get a pair each, since no one matrix maps both.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers, ops

from mfef_keras.distill.losses import KDLoss
from mfef_keras.distill.methods.base import MethodOption, OnlineMethod, register_method


@keras.saving.register_keras_serializable(package="mfef_keras")
class SoftTargetKL(KDLoss):
    """``T^2 * KL(t || softmax(s/T))`` of a target distribution ``t``, per example; the target keeps its gradient.

    `KDLoss`, whose arguments, checks and config it keeps, takes a teacher's logits and detaches them;
    OKDDip's first-level target is a distribution whose attention weights must learn, so the caller detaches
    what it means to. As in KDLoss, ``epsilon`` is added to the target before the log (the official code's
    1e-7), and the batch mean is scaled for `tf.distribute` by `keras.losses.Loss`.

    Args:
        temperature: softening temperature ``T`` (> 0) of the student's logits.
        epsilon: smoothing added to the target (>= 0).
        reduction: a `keras.losses.Loss` reduction.
        name: loss name.

    Example:
        >>> kl = SoftTargetKL(temperature=3.0)
        >>> float(kl(keras.ops.full((2, 4), 0.25), keras.ops.zeros((2, 4)))) < 1e-5
        True
    """

    def call(self, y_true, y_pred):
        t = self.temperature
        target = ops.cast(y_true, "float32") + self.epsilon
        log_student = ops.log_softmax(ops.cast(y_pred, "float32") / t, axis=-1)
        return (t * t) * ops.sum(target * (ops.log(target) - log_student), axis=-1)


@register_method
class DiversePeers(OnlineMethod):
    """OKDDip: peers learn from their own attention-weighted peer targets, the last student from the peers' mean.

    The head (`build_head`) is the attention: it maps the peers' feature maps to the ``(batch, m, m)`` weights
    ``alpha``, each row summing to 1, trained by the distiller's second optimiser.

    Args:
        projection_factor: the query and key width is the peers' channels divided by it (option; the official
            code's 8).
        **kwargs: `OnlineMethod` arguments.

    Example:
        >>> DiversePeers(projection_factor=4).projection_factor
        4
        >>> DiversePeers().term_names(3)
        ['ce_s0', 'ce_s1', 'ce_s2', 'kd_s0', 'kd_s1', 'kd_s2', 'kd_weight']
    """

    name = "okddip"
    description = "diverse peers: attention-weighted peer targets, the last student led by the peers (Chen 2020)"
    ramps_up = True
    # Two peers to weigh and the group leader.
    min_students = 3
    options = {
        "projection_factor": MethodOption(
            8, "query/key width: the peers' channels divided by this", lambda n: n >= 1, ">= 1"
        )
    }

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.soft_kd = SoftTargetKL(temperature=self.temperature, epsilon=1e-7, name="soft_target_kl")

    def build_head(
        self, feature_shapes: Sequence[Sequence[int | None]], num_classes: int, sync_batchnorm: bool = False
    ) -> keras.Model:
        peers = list(feature_shapes)[:-1]
        inputs = [keras.Input(tuple(shape[1:]), name=f"s{i}_feature_map") for i, shape in enumerate(peers)]
        channels = [int(shape[-1]) for shape in peers]
        width = max(1, min(channels) // self.projection_factor)
        shared = len(set(channels)) == 1
        query = layers.Dense(width, use_bias=False, name="query")
        key = layers.Dense(width, use_bias=False, name="key")
        queries, keys = [], []
        for i, x in enumerate(inputs):
            pooled = layers.GlobalAveragePooling2D(name=f"s{i}_attention_pool")(x)
            if not shared:
                query = layers.Dense(width, use_bias=False, name=f"s{i}_query")
                key = layers.Dense(width, use_bias=False, name=f"s{i}_key")
            queries.append(layers.Reshape((1, width), name=f"s{i}_query_row")(query(pooled)))
            keys.append(layers.Reshape((1, width), name=f"s{i}_key_row")(key(pooled)))
        stacked_queries = layers.Concatenate(axis=1, name="queries")(queries)
        stacked_keys = layers.Concatenate(axis=1, name="keys")(keys)
        energy = layers.Dot(axes=2, name="energy")([stacked_queries, stacked_keys])
        # Float32 like every classifier output, so the weights sum to 1 exactly under mixed precision.
        attention = layers.Softmax(axis=-1, dtype="float32", name="attention")(energy)
        return keras.Model(inputs, attention, name="peer_attention")

    def head_outputs(self, head: keras.Model, features: list, logits: list, training=None) -> dict:
        return {"attention": ops.cast(head(features[:-1], training=training), "float32")}

    def distillation_terms(self, labels, logits: list, extras: dict, weight) -> dict:
        peers, leader = logits[:-1], logits[-1]
        # (batch, peer, class): the peers' soft predictions, detached; only the attention weighs them with a gradient.
        soft = ops.stop_gradient(ops.stack([ops.softmax(z / self.temperature, axis=-1) for z in peers], axis=1))
        targets = ops.einsum("bij,bjc->bic", extras["attention"], soft)
        terms = {f"kd_s{i}": self.soft_kd(targets[:, i], z) for i, z in enumerate(peers)}
        terms[f"kd_s{len(peers)}"] = self.soft_kd(ops.mean(soft, axis=1), leader)
        return terms
