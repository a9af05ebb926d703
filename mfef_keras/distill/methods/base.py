"""What every online-distillation method is: its loss terms, what it adds to the network, its options.

A method is one small class registered under its name (`register_method`); the distiller asks it for the
trainable head it adds (a fusion head, a gate, an attention aggregator; None for none), what that head
outputs from the students' feature maps and logits, and the loss terms of a batch. Its own hyper-parameters
(PCL's EMA decay, MFEF's block sizes) it declares in ``options``, each with its default; the library, the
config (``method_options``) and the command line (``--method-option NAME=VALUE``) set them by name. Nothing
else in the package branches on the method's name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import keras
from keras import ops

from mfef_keras import recipe
from mfef_keras._names import unknown_name_error
from mfef_keras.distill.losses import KDLoss
from mfef_keras.registry import Registry
from mfef_keras.typed_values import convert_value

# Name -> the method's class; every module of this package registers its own (see `register_method`).
METHODS: Registry[type[OnlineMethod]] = Registry("method")


@dataclass(frozen=True)
class MethodOption:
    """One hyper-parameter a method declares: its default, whose type every given value is converted to.

    Args:
        default: the value when none is given (the paper's); an int, float, bool or str.
        help: what it sets, in a few words (shown by `mfef list-methods`).
        check: whether a converted value is allowed; None allows every value of the type.
        allowed: the allowed values in words, for the error message (with ``check``).

    Example:
        >>> MethodOption(0.999, "EMA decay", lambda a: 0 <= a < 1, ">= 0 and < 1").default
        0.999
    """

    default: int | float | bool | str
    help: str
    check: Callable[[object], bool] | None = None
    allowed: str = ""


def register_method(cls: type[OnlineMethod]) -> type[OnlineMethod]:
    """Class decorator registering an `OnlineMethod` subclass under its ``name``."""
    if not getattr(cls, "name", None) or not getattr(cls, "description", None):
        raise ValueError(f"Method class {cls.__name__} needs a `name` and a one-line `description`.")
    # Options become attributes of the method object: one that shadowed the base's would break the method.
    shadowing = [
        name for name in cls.options if hasattr(OnlineMethod, name) or name in ("temperature", "ablate", "ce", "kd")
    ]
    if shadowing:
        raise ValueError(f"Method class {cls.__name__} declares options {shadowing} named as OnlineMethod's own.")
    return METHODS.register(cls.name, cls.description)(cls)


def method_class(name: str) -> type[OnlineMethod]:
    """The registered class of method ``name``; a ValueError naming the registered ones otherwise."""
    return METHODS.get(name)


class OnlineMethod:
    """Base of the online-distillation methods: plain training of every student unless a subclass adds terms.

    Subclasses set ``name`` and ``description``, may declare their own hyper-parameters in ``options`` (each
    an attribute of the method object, at its default unless given), may add a trainable head (`build_head`,
    trained by the distiller's second optimiser) and its outputs (`head_outputs`), and add their terms in
    `distillation_terms`. The cross-entropy of every student is common to all methods and computed here.

    Args:
        temperature: KD temperature ``T`` of the method's soft targets.
        ablate: switched-off components; only methods that list ``ablations`` accept any.
        **options: values of the method's declared ``options``, by name (see `checked_options`).

    Example:
        >>> method = method_class("dml")(temperature=3.0)
        >>> method.term_names(2)
        ['ce_s0', 'ce_s1', 'kd_s0', 'kd_s1']
        >>> method_class("pcl")(ema_decay=0.99).ema_decay
        0.99
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
    # The method's own hyper-parameters, by name.
    options: ClassVar[dict[str, MethodOption]] = {}

    def __init__(self, temperature: float = recipe.TEMPERATURE, ablate: Sequence[str] = (), **options):
        for component in ablate:
            if not self.ablations:
                raise ValueError(f"ablate={list(ablate)} does not apply to method {self.name!r}.")
            if component not in self.ablations:
                raise unknown_name_error(f"{self.name} ablation", component, self.ablations)
        self.temperature = float(temperature)
        self.ablate = tuple(ablate)
        for option, value in {**self.option_defaults(), **self.checked_options(options)}.items():
            setattr(self, option, value)
        self.ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, name="ce")
        # FFL smooths the teacher's probabilities by 1e-7 before the log; the other methods' formulas are
        # the same KL, and the shared definition keeps every method's KD term comparable.
        self.kd = KDLoss(temperature=self.temperature, epsilon=1e-7)

    @classmethod
    def has_fused_classifier(cls) -> bool:
        """Whether the method's head gives a fused classifier of the whole cohort (`mfef export --model fused`)."""
        return "fused" in cls.head_classifiers

    @classmethod
    def option_defaults(cls) -> dict:
        """Name -> default of each declared option."""
        return {option: spec.default for option, spec in cls.options.items()}

    @classmethod
    def checked_options(cls, values: Mapping) -> dict:
        """``values`` (option name -> value, from YAML, the command line or Python) as the declared types.

        Raises:
            ValueError: one line naming an unknown option and the declared ones, or a bad value and what the
                option accepts.
        """
        if not isinstance(values, Mapping):
            raise ValueError(f"method_options must map {cls.name} option names to values, got {values!r}.")
        checked = {}
        for option, value in values.items():
            if option not in cls.options:
                if not cls.options:
                    raise ValueError(f"Unknown {cls.name} option {option!r}: method {cls.name!r} has no options.")
                raise unknown_name_error(f"{cls.name} option", option, cls.options)
            spec = cls.options[option]
            value = convert_value(f"{cls.name} option {option}", value, type(spec.default))
            if spec.check is not None and not spec.check(value):
                raise ValueError(f"{cls.name} option {option} must be {spec.allowed}, got {value!r}.")
            checked[option] = value
        return checked

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
            **{option: getattr(self, option) for option in self.options},
        )


def mean_logits(logits: list):
    """The students' logits averaged: the ensemble FFL and ONE distil the fused head from."""
    return ops.mean(ops.stack(logits), axis=0)
