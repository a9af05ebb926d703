"""What every online-distillation method is: its loss terms, what it adds to the network, its options.

A method is one small class registered under its name (`register_method`); the distiller asks it for the
trainable head it adds (a fusion head, a gate, an attention aggregator; None for none), what that head
outputs from the students' feature maps and logits, and the loss terms of a batch. Nothing else in the
package branches on the method's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import keras
from keras import ops

from mfef_keras._names import unknown_name_error
from mfef_keras.distill.losses import KDLoss

_METHODS: dict[str, type[OnlineMethod]] = {}


def register_method(cls: type[OnlineMethod]) -> type[OnlineMethod]:
    """Class decorator registering an `OnlineMethod` subclass under its ``name``."""
    if not getattr(cls, "name", None) or not getattr(cls, "description", None):
        raise ValueError(f"Method class {cls.__name__} needs a `name` and a one-line `description`.")
    if cls.name in _METHODS and _METHODS[cls.name] is not cls:
        raise ValueError(f"A method named {cls.name!r} is already registered ({_METHODS[cls.name].__name__}).")
    _METHODS[cls.name] = cls
    return cls


def registered_methods() -> dict[str, type[OnlineMethod]]:
    """Name -> class of every registered method, in registration order."""
    return dict(_METHODS)


def method_class(name: str) -> type[OnlineMethod]:
    """The registered class of method ``name``; a ValueError naming the registered ones otherwise."""
    if name not in _METHODS:
        raise unknown_name_error("method", name, _METHODS)
    return _METHODS[name]


class OnlineMethod:
    """Base of the online-distillation methods: plain training of every student unless a subclass adds terms.

    Subclasses set ``name`` and ``description``, may add a trainable head (`build_head`, trained by the
    distiller's second optimiser) and its outputs (`head_outputs`), and add their terms in `distillation_terms`.
    The cross-entropy of every student is common to all methods and computed here.

    Args:
        temperature: KD temperature ``T`` of the method's soft targets.
        ablate: switched-off components; only methods that list ``ablations`` accept any.
        splits: channel groups of the multi-scale block (MFEF).
        reduction: channel-attention reduction ratio (MFEF).
        kernel_size: spatial-attention kernel size (MFEF).

    Example:
        >>> method = method_class("dml")(temperature=3.0)
        >>> method.term_names(2)
        ['ce_s0', 'ce_s1', 'kd_s0', 'kd_s1']
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # Plain training of one student is the baseline; distillation needs peers.
    min_students: ClassVar[int] = 2
    # The KD weight follows FFL's sigmoid ramp-up w(t), which the distiller computes (logged as kd_weight).
    ramps_up: ClassVar[bool] = False
    ablations: ClassVar[tuple[str, ...]] = ()
    # Extra outputs of the head beside the students' logits that are classifiers (logged as acc_<name>).
    head_classifiers: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        temperature: float = 3.0,
        ablate: Sequence[str] = (),
        splits: int = 4,
        reduction: int = 8,
        kernel_size: int = 7,
    ):
        for component in ablate:
            if not self.ablations:
                raise ValueError(f"ablate={list(ablate)} does not apply to method {self.name!r}.")
            if component not in self.ablations:
                raise unknown_name_error(f"{self.name} ablation", component, self.ablations)
        self.temperature = float(temperature)
        self.ablate = tuple(ablate)
        self.splits = int(splits)
        self.reduction = int(reduction)
        self.kernel_size = int(kernel_size)
        self.ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, name="ce")
        # FFL smooths the teacher's probabilities by 1e-7 before the log; the other methods' formulas are
        # the same KL, and the shared definition keeps every method's KD term comparable.
        self.kd = KDLoss(temperature=self.temperature, epsilon=1e-7)

    def check_cohort(self, num_students: int) -> None:
        """Raise ValueError if the method cannot train ``num_students`` students."""
        if num_students < self.min_students:
            raise ValueError(f"Method {self.name!r} needs at least {self.min_students} students, got {num_students}.")

    def build_head(
        self, feature_shapes: Sequence[Sequence[int | None]], num_classes: int, sync_batchnorm: bool = False
    ) -> keras.Model | None:
        """The trainable network the method adds beside the students, or None.

        Args:
            feature_shapes: each student's last-stage feature-map shape, batch first.
            num_classes: the students' number of logits.
            sync_batchnorm: synchronise the head's BatchNorm statistics across `tf.distribute` replicas.
        """
        return None

    def head_outputs(self, head: keras.Model, features: list, logits: list, training=None) -> dict:
        """The head's outputs (float32) from the students' feature maps and logits, by name."""
        return {}

    def build_averages(self, students: keras.Model) -> keras.Model | None:
        """A non-trainable copy of the students whose weights the method averages over training, or None.

        The distiller keeps it beside the students (saved and restored with them), runs `average_outputs`
        on each batch, and calls `update_averages` after both optimisers have applied their step.

        Args:
            students: the students' joint network (images to each student's feature map and logits).
        """
        return None

    def average_outputs(self, averages: keras.Model, images) -> dict:
        """The averaged network's outputs (float32, no gradient) on ``images``, by name, added to the extras."""
        return {}

    def update_averages(self, averages: keras.Model, students: keras.Model, step) -> None:
        """Move the averaged weights toward the students' after an optimiser step.

        Args:
            averages: `build_averages`.
            students: the students' joint network, holding the weights just updated.
            step: the student optimiser's step count, this step included (a scalar tensor).
        """

    def distillation_terms(self, labels, logits: list, extras: dict, weight) -> dict:
        """The method's terms beside the students' cross-entropies, each a batch-mean scalar, by name.

        Args:
            labels: the batch's integer labels.
            logits: each student's float32 logits.
            extras: `head_outputs`.
            weight: the ramp-up weight ``w(t)`` (1 for methods that do not ramp up).
        """
        return {}

    def weighted(self, name: str) -> bool:
        """Whether term ``name`` of `distillation_terms` is multiplied by ``w(t)`` in the total."""
        return self.ramps_up and name.startswith("kd_")

    def term_names(self, num_students: int) -> list[str]:
        """The names of the logged loss terms of a cohort of ``num_students``, ``"loss"`` excluded."""
        names = [f"ce_s{i}" for i in range(num_students)]
        names += [f"ce_{name}" for name in self.head_classifiers]
        names += self._kd_names(num_students)
        return names + (["kd_weight"] if self.ramps_up else [])

    def _kd_names(self, num_students: int) -> list[str]:
        return [f"kd_s{i}" for i in range(num_students)]

    def loss_terms(self, labels, logits: list, extras: dict, weight) -> dict:
        """Every term (batch mean, scaled for `tf.distribute` by the loss objects) and the total under ``"loss"``."""
        terms = {f"ce_s{i}": self.ce(labels, z) for i, z in enumerate(logits)}
        terms.update({f"ce_{name}": self.ce(labels, extras[name]) for name in self.head_classifiers})
        total = sum(terms.values())
        for name, value in self.distillation_terms(labels, logits, extras, weight).items():
            terms[name] = value
            total += weight * value if self.weighted(name) else value
        if self.ramps_up:
            terms["kd_weight"] = weight
        terms["loss"] = total
        return terms

    def get_config(self) -> dict:
        """The constructor arguments, for the distiller's config."""
        return dict(
            temperature=self.temperature,
            ablate=list(self.ablate),
            splits=self.splits,
            reduction=self.reduction,
            kernel_size=self.kernel_size,
        )


def mean_logits(logits: list):
    """The students' logits averaged: the ensemble FFL and ONE distil the fused head from."""
    return ops.mean(ops.stack(logits), axis=0)
