"""The online distiller: n students and the MFEF fusion path trained together by one custom train_step.

The objective, the L2 terms and the loss scaling are backend-neutral `keras.ops` code; only taking the
gradients and applying the updates differ per backend: a `tf.GradientTape` step and a torch autograd step
here, and a stateless step for `jax.jit` in `mfef_keras.distill.jax_steps`.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Mapping, Sequence

import keras
import numpy as np
from keras import ops

from mfef_keras import recipe
from mfef_keras.distill.losses import KDLoss, rampup_weight
from mfef_keras.distill.methods import fused_methods, method_class
from mfef_keras.distill.pytorch_sgd import PyTorchSGD
from mfef_keras.distill.schedules import (
    CosineEpochDecay,
    MultiStepDecay,
    checked_milestones,
    checked_number,
    checked_steps_per_epoch,
    epoch_at_step,
)
from mfef_keras.models.registry import feature_layer

# Prefixed to the names of a teacher's layers, which must not share names (and so variable paths) with students'.
TEACHER_PREFIX = "teacher_"
# The default optimisers' learning-rate schedules (`compile(lr_schedule=...)`).
LR_SCHEDULES = ("step", "cosine")
# The backends whose trainers the distiller has a train_step for.
TRAINING_BACKENDS = ("tensorflow", "jax", "torch")


def _num_replicas() -> int:
    # Only tf.distribute runs the step once per replica and sums the replicas' gradients; a JAX
    # step is one program over the global batch, however its arrays are sharded.
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def _loss_scale(optimizer):
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return ops.convert_to_tensor(optimizer.dynamic_scale)
    return None


def _with_l2(grads, variables, decay: float, loss_scale=None):
    # PyTorch SGD's weight_decay: L2 added to the gradient, so it passes through momentum
    # (Keras's own weight_decay is decoupled, which is a different optimiser). Under loss
    # scaling the gradients are still scaled here, so the L2 term is scaled alike.
    # These are per-replica gradients, which any Keras optimiser sums across replicas, so
    # each replica adds its 1/N share. Adding it after aggregation instead would need a hook
    # inside every optimiser, and a user-supplied optimiser must keep the L2 term too.
    if not decay:
        return list(grads)
    coefficient = decay / _num_replicas()
    if loss_scale is not None:
        coefficient = coefficient * loss_scale
    return [g if g is None else g + ops.cast(coefficient, g.dtype) * v for g, v in zip(grads, variables)]


class _BothOptimizers:
    """Stands in for `keras.Model.optimizer`: Keras's trainers know one optimiser, the distiller has two.

    Keras's JAX trainer passes ``model.optimizer.variables`` into the stateless train step and writes
    the values the step returns back into them after each epoch; listing both optimisers' variables
    (student first) keeps both states in that loop. The distiller builds the two in
    `OnlineDistiller.prepare`. Not a `keras.optimizers.Optimizer`: it has no variables of its own and
    nothing for `Model.save` to write twice (the optimisers are saved under their own attributes).

    Args:
        distiller: the `OnlineDistiller` whose optimisers it lists.
    """

    # Keras would otherwise build it with every weight before the first step.
    built = True

    def __init__(self, distiller: OnlineDistiller):
        self._distiller = distiller

    @property
    def optimizers(self) -> list:
        """The student optimiser, then the fusion optimiser (fusion methods); those that exist yet."""
        pair = (self._distiller.student_optimizer, self._distiller.fusion_optimizer)
        return [optimizer for optimizer in pair if optimizer is not None]

    @property
    def variables(self) -> list:
        return [v for optimizer in self.optimizers for v in optimizer.variables]


def _checked_schedule(name: str, epochs: int | None) -> str:
    if name not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {name!r}.")
    if name == "cosine" and epochs is None:
        raise ValueError("lr_schedule 'cosine' anneals over the run's epochs: pass compile(lr_epochs=...).")
    return name


def _ensemble_probabilities(logits):
    return ops.mean(ops.stack([ops.softmax(z) for z in logits]), axis=0)


def _students_of(net: keras.Model) -> list[keras.Model]:
    """Each student of a joint network as a standalone model from images to logits (weights shared).

    Separately built students sit in the network as nested ``student_<i>`` models; students
    built on one input tensor (`build_students`) are paths of the network's own graph.
    """
    nested = [layer for layer in net.layers if layer.name.startswith("student_")]
    if nested:
        return [keras.Model(branch.inputs, branch.outputs[1], name=branch.name) for branch in nested]
    return [keras.Model(net.inputs, z, name=f"student_{i}") for i, z in enumerate(net.outputs[1::2])]


@keras.saving.register_keras_serializable(package="mfef_keras")
class OnlineDistiller(keras.Model):
    """Trains a cohort of students together by online knowledge distillation.

    The method (a registered `mfef_keras.distill.methods.OnlineMethod`, see `list_methods`) gives the loss
    terms and the trainable head it adds beside the students: MFEF and FFL a fusion head, ONE a gate, and so
    on. The students may be different networks (a large peer beside the small student to deploy), as long as
    the method can combine their maps. Methods that ramp up (FFL, MFEF) weigh their distillation terms by
    ``w(t)``, the sigmoid ramp-up over ``rampup_epochs`` read from the step counter. Every distillation target
    is detached.

    Args:
        students: the student models from images to logits (at least the method's ``min_students``), each with
            a feature layer (see `mfef_keras.models.feature_layer`). Students that share an input tensor (from
            `build_students`) are run as one graph, so a shared trunk is computed once.
        method: a registered method name (`mfef_keras.distill.methods.list_methods`).
        temperature: KD temperature ``T``.
        rampup_epochs: epochs of the ramp-up of the KD weight (methods that ramp up); None: FFL's 80 of 300
            epochs scaled to the ``epochs`` of the first `fit` (5.3 of a 20-epoch fit).
        ablate: MFEF components to switch off: ``"multi_scale"``, ``"attention"``
            (both attentions), ``"channel_attention"``, ``"spatial_attention"``.
        method_options: the method's own hyper-parameters by name (its ``options``, e.g. PCL's ``ema_decay``,
            MFEF's ``splits``, ``reduction`` and ``kernel_size``); those not given keep their defaults.
        teacher: a trained network from the same images to the same classes, frozen, that every student also
            distils from (Hinton et al. 2015: ``teacher_weight * KD(z_i <- z_teacher)`` at ``temperature``, logged
            as ``kd_teacher_s<i>``), beside the online method's terms; None for none.
        teacher_weight: the weight of the teacher's KD terms.
        sync_batchnorm: synchronise the fusion path's BatchNorm statistics across
            `tf.distribute` replicas (build the students with it too).
        **kwargs: `keras.Model` arguments (``name``...).

    Example:
        >>> from mfef_keras.models import get_backbone
        >>> distiller = OnlineDistiller([get_backbone("resnet32", 100) for _ in range(2)], method="mfef")
        >>> distiller.compile()
        >>> distiller.fit(images, labels, batch_size=128, epochs=300)  # doctest: +SKIP
        >>> student = distiller.best_student(validation_data)  # doctest: +SKIP
    """

    def __init__(
        self,
        students: Sequence[keras.Model],
        method: str = "mfef",
        temperature: float = recipe.TEMPERATURE,
        rampup_epochs: float | None = None,
        ablate: Sequence[str] = (),
        method_options: Mapping[str, object] | None = None,
        sync_batchnorm: bool = False,
        teacher: keras.Model | None = None,
        teacher_weight: float = 1.0,
        **kwargs,
    ):
        kwargs.setdefault("name", "online_distiller")
        super().__init__(**kwargs)
        students = list(students)
        if rampup_epochs is not None and float(rampup_epochs) < 0:
            raise ValueError(f"rampup_epochs must be >= 0 or None, got {rampup_epochs!r}.")
        self.online_method = method_class(method)(temperature=temperature, ablate=ablate, **(method_options or {}))
        self.online_method.check_cohort(len(students))
        self.method = method
        self.temperature = float(temperature)
        self.rampup_epochs = None if rampup_epochs is None else float(rampup_epochs)
        self.ablate = tuple(ablate)
        self.method_options = self.online_method.checked_options(method_options or {})
        self.sync_batchnorm = bool(sync_batchnorm)
        self.num_students = len(students)

        self.students_net = self._joint_network(students)
        self.num_classes = int(self.students_net.outputs[1].shape[-1])
        # The method's trainable head (fusion head, gate, ...), trained by the second optimiser; the attribute
        # keeps its historical name, which saved distillers' weight paths carry.
        self.fusion = self.online_method.build_head(
            [tuple(t.shape) for t in self.students_net.outputs[0::2]], self.num_classes, self.sync_batchnorm
        )
        # The method's running averages of the students' weights (PCL's temporal means), trained by no optimiser.
        self.averages = self.online_method.build_averages(self.students_net)
        self.teacher = self._frozen_teacher(teacher)
        self.teacher_weight = checked_number("teacher_weight", teacher_weight)
        self._teacher_kd = KDLoss(temperature=self.temperature, epsilon=1e-7, name="teacher_kd")
        self._trackers = self._make_trackers()
        self.student_optimizer = None
        self.fusion_optimizer = None
        self._optimizer_settings = None
        self.built = True

    def _frozen_teacher(self, teacher: keras.Model | None) -> keras.Model | None:
        if teacher is None:
            return None
        images, classes = tuple(self.students_net.inputs[0].shape[1:]), self.num_classes
        if len(teacher.inputs) != 1 or tuple(teacher.inputs[0].shape[1:]) != images:
            raise ValueError(
                f"The teacher {teacher.name!r} takes inputs {[tuple(t.shape[1:]) for t in teacher.inputs]}; the "
                f"students take images of shape {images}."
            )
        if len(teacher.outputs) != 1 or int(teacher.outputs[0].shape[-1]) != classes:
            raise ValueError(
                f"The teacher {teacher.name!r} predicts {[t.shape[-1] for t in teacher.outputs]} classes; the "
                f"students predict {classes}."
            )
        if not all(layer.name.startswith(TEACHER_PREFIX) for layer in teacher.layers):
            # A teacher from another run names its layers as the students do (s0_stem_conv...), and checkpoints
            # tell variables apart by their layers' names: a renamed copy with the same weights keeps them apart.
            renamed = keras.models.clone_model(
                teacher,
                clone_function=lambda layer: layer.__class__.from_config(
                    {**layer.get_config(), "name": TEACHER_PREFIX + layer.name}
                ),
            )
            renamed.set_weights(teacher.get_weights())
            teacher = renamed
        # Frozen: its weights become non-trainable variables, which no optimiser updates and checkpoints keep.
        teacher.trainable = False
        return teacher

    def _joint_network(self, students: list[keras.Model]) -> keras.Model:
        for s in students:
            if len(s.inputs) != 1 or len(s.outputs) != 1:
                raise ValueError(f"Student {s.name!r} must map one image input to one logits output.")
        classes = {int(s.outputs[0].shape[-1]) for s in students}
        if len(classes) != 1:
            raise ValueError(f"All students must predict the same number of classes; got {sorted(classes)}.")
        images = students[0].inputs[0]
        outputs = []
        if all(s.inputs[0] is images for s in students):
            for s in students:
                outputs += [feature_layer(s).output, s.outputs[0]]
        else:
            images = keras.Input(tuple(images.shape[1:]), name="images")
            for i, s in enumerate(students):
                branch = keras.Model(s.inputs, [feature_layer(s).output, s.outputs[0]], name=f"student_{i}")
                outputs += list(branch(images))
        return keras.Model(images, outputs, name="students")

    def _make_trackers(self) -> dict[str, keras.metrics.Metric]:
        names = ["loss"] + self.online_method.term_names(self.num_students)
        if self.teacher is not None:
            names += [f"kd_teacher_s{i}" for i in range(self.num_students)]
        trackers = {name: keras.metrics.Mean(name=name) for name in names}
        accuracies = [f"acc_s{i}" for i in range(self.num_students)]
        accuracies += [f"acc_{name}" for name in self.online_method.head_classifiers] + ["acc_ensemble"]
        trackers.update({name: keras.metrics.SparseCategoricalAccuracy(name=name) for name in accuracies})
        return trackers

    @property
    def metrics(self):
        return list(self._trackers.values())

    # ----------------------------------------------------------------- forward
    @property
    def head_classifiers(self) -> tuple[str, ...]:
        """The classifiers the method's head adds beside the students (``("fused",)`` for MFEF, FFL and ONE)."""
        return self.online_method.head_classifiers

    def _forward(self, images, training=None):
        """Each student's float32 logits and the method's head outputs (`OnlineMethod.head_outputs`)."""
        outputs = self.students_net(images, training=training)
        features = list(outputs[0::2])
        logits = [ops.cast(z, "float32") for z in outputs[1::2]]
        extras = {} if self.fusion is None else self.online_method.head_outputs(self.fusion, features, logits, training)
        if self.averages is not None:
            extras.update(self.online_method.average_outputs(self.averages, images))
        if self.teacher is not None:
            extras["teacher"] = ops.cast(self.teacher(images, training=False), "float32")
        return logits, extras

    def call(self, images, training=None):
        """Returns ``{"s0": logits, ..., "fused": logits (methods with one), "ensemble": mean probabilities}``."""
        logits, extras = self._forward(images, training=training)
        outputs = {f"s{i}": z for i, z in enumerate(logits)}
        outputs.update({name: extras[name] for name in self.head_classifiers})
        outputs["ensemble"] = _ensemble_probabilities(logits)
        return outputs

    @property
    def steps_per_epoch(self) -> int | None:
        """Optimizer steps per epoch, which turn the step counter into epochs; None until fixed.

        Given to `compile`, or else fixed by the first `fit` (or `prepare`) and kept from then on.
        The learning-rate schedule and ``w(t)`` both read it, so they cannot disagree on the epoch.
        """
        return None if self._optimizer_settings is None else self._optimizer_settings["steps_per_epoch"]

    def kd_weight(self):
        """The current ramp-up weight ``w(t)``, with ``t`` the epoch read from the student optimizer's step."""
        if self.rampup_epochs is None:
            # Not fitted yet, so at epoch 0, where the weight is exp(-5) whatever the ramp-up's length.
            return rampup_weight(0, 1.0)
        if self.student_optimizer is None or self.steps_per_epoch is None:
            return rampup_weight(0, self.rampup_epochs)
        return rampup_weight(epoch_at_step(self.student_optimizer.iterations, self.steps_per_epoch), self.rampup_epochs)

    def loss_terms(self, labels, logits: list, extras: dict | None = None) -> dict:
        """Each loss term (batch mean, scaled for `tf.distribute`) and the total under ``"loss"``.

        Args:
            labels: the batch's integer labels.
            logits: each student's float32 logits.
            extras: the method's head outputs (`_forward`), e.g. ``{"fused": logits}``.
        """
        weight = self.kd_weight() if self.online_method.ramps_up else 1.0
        terms = self.online_method.loss_terms(labels, logits, extras or {}, weight)
        if self.teacher is not None:
            for i, z in enumerate(logits):
                terms[f"kd_teacher_s{i}"] = self._teacher_kd(extras["teacher"], z)
                terms["loss"] = terms["loss"] + self.teacher_weight * terms[f"kd_teacher_s{i}"]
        return terms

    # ------------------------------------------------------------ train / test
    def _update_trackers(self, terms, labels, logits, extras):
        replicas = _num_replicas()
        for name, value in terms.items():
            # Loss objects divide by the replica count for the gradient; the logged value is
            # the plain batch mean. The ramp-up weight is not a loss and is not scaled.
            self._trackers[name].update_state(value if name == "kd_weight" else value * replicas)
        for i, z in enumerate(logits):
            self._trackers[f"acc_s{i}"].update_state(labels, z)
        for name in self.head_classifiers:
            self._trackers[f"acc_{name}"].update_state(labels, extras[name])
        self._trackers["acc_ensemble"].update_state(labels, _ensemble_probabilities(logits))
        return {name: tracker.result() for name, tracker in self._trackers.items()}

    @staticmethod
    def _unpack(data):
        if isinstance(data, (list, tuple)):
            return data[0], data[1]
        raise ValueError("OnlineDistiller expects (images, labels) batches.")

    def _trained_variables(self) -> tuple[list, list]:
        """The variables of the student optimiser and of the fusion optimiser, in the order each was built with."""
        fusion_vars = self.fusion.trainable_variables if self.fusion is not None else []
        return self.students_net.trainable_variables, fusion_vars

    def _scaled_loss(self, terms: dict):
        """The loss to differentiate: the total, times the student optimiser's loss scale (float16)."""
        scale = _loss_scale(self.student_optimizer)
        return terms["loss"] if scale is None else terms["loss"] * scale

    def _optimizer_gradients(self, grads: list, student_values: list, fusion_values: list) -> tuple[list, list]:
        """The gradients each optimiser applies: the L2 terms added and each optimiser's own loss scale.

        Args:
            grads: gradients of `_scaled_loss` with respect to the student variables, then the fusion
                variables (`_trained_variables`).
            student_values: the student variables, or in a stateless step their current values.
            fusion_values: the fusion variables, or their current values.
        """
        split = len(student_values)
        student_grads, fusion_grads = grads[:split], grads[split:]
        settings = self._optimizer_settings
        student_scale = _loss_scale(self.student_optimizer)
        student_grads = _with_l2(student_grads, student_values, settings["student_weight_decay"], student_scale)
        if not fusion_values:
            return student_grads, []
        fusion_scale = _loss_scale(self.fusion_optimizer)
        if student_scale is not None or fusion_scale is not None:
            # One backward pass serves both optimisers: re-express the student optimiser's
            # loss scale (1 without one) as the fusion optimiser's own.
            ratio = (1.0 if fusion_scale is None else fusion_scale) / (1.0 if student_scale is None else student_scale)
            fusion_grads = [g * ops.cast(ratio, g.dtype) for g in fusion_grads]
        fusion_grads = _with_l2(fusion_grads, fusion_values, settings["fusion_weight_decay"], fusion_scale)
        return student_grads, fusion_grads

    def train_step(self, *args):
        """One optimisation step of both optimisers; Keras's trainer calls it.

        TensorFlow and torch call ``train_step(data)`` and get the logs; the step updates the variables.
        JAX calls ``train_step(state, data)`` and gets ``(logs, new_state)``, touching no variable
        (see `mfef_keras.distill.jax_steps.train_step`).
        """
        if keras.backend.backend() == "jax":
            from mfef_keras.distill import jax_steps

            return jax_steps.train_step(self, *args)
        if keras.backend.backend() == "torch":
            return self._torch_train_step(*args)
        return self._tensorflow_train_step(*args)

    def _tensorflow_train_step(self, data):
        import tensorflow as tf

        images, labels = self._unpack(data)
        student_vars, fusion_vars = self._trained_variables()
        with tf.GradientTape() as tape:
            logits, extras = self._forward(images, training=True)
            terms = self.loss_terms(labels, logits, extras)
            loss = self._scaled_loss(terms)
        grads = tape.gradient(loss, student_vars + fusion_vars)
        self._apply_gradients(grads, student_vars, fusion_vars)
        self.update_averages()
        return self._update_trackers(terms, labels, logits, extras)

    def _torch_train_step(self, data):
        import torch

        images, labels = self._unpack(data)
        student_vars, fusion_vars = self._trained_variables()
        self.zero_grad()
        logits, extras = self._forward(images, training=True)
        terms = self.loss_terms(labels, logits, extras)
        self._scaled_loss(terms).backward()
        grads = [v.value.grad for v in student_vars + fusion_vars]
        # The updates and the bookkeeping are no part of the graph to differentiate.
        with torch.no_grad():
            self._apply_gradients(grads, student_vars, fusion_vars)
            self.update_averages()
            return self._update_trackers(terms, labels, logits, extras)

    def _apply_gradients(self, grads, student_vars, fusion_vars):
        student_grads, fusion_grads = self._optimizer_gradients(grads, student_vars, fusion_vars)
        self.student_optimizer.apply(student_grads, student_vars)
        if fusion_vars:
            self.fusion_optimizer.apply(fusion_grads, fusion_vars)

    def update_averages(self) -> None:
        """The method's averaging step (`OnlineMethod.update_averages`), after both optimisers applied theirs.

        It assigns the averaged variables, so the JAX step runs it under a `keras.StatelessScope` of the
        new state and collects the values it assigns.
        """
        if self.averages is not None:
            self.online_method.update_averages(self.averages, self.students_net, self.student_optimizer.iterations)

    def test_step(self, *args):
        """The loss terms and accuracies of one batch; ``test_step(state, data)`` -> ``(logs, state)`` on JAX."""
        if keras.backend.backend() == "jax":
            from mfef_keras.distill import jax_steps

            return jax_steps.test_step(self, *args)
        images, labels = self._unpack(args[0])
        logits, extras = self._forward(images, training=False)
        terms = self.loss_terms(labels, logits, extras)
        return self._update_trackers(terms, labels, logits, extras)

    # --------------------------------------------------------------- compile
    def compile(
        self,
        student_optimizer: keras.optimizers.Optimizer | None = None,
        fusion_optimizer: keras.optimizers.Optimizer | None = None,
        learning_rate: float = recipe.LEARNING_RATE,
        lr_milestones: Sequence[float] = recipe.LR_MILESTONES,
        lr_decay: float = recipe.LR_DECAY,
        student_weight_decay: float = recipe.STUDENT_WEIGHT_DECAY,
        fusion_weight_decay: float = recipe.FUSION_WEIGHT_DECAY,
        steps_per_epoch: int | None = None,
        jit_compile: bool | str = "auto",
        steps_per_execution: int = 1,
        lr_schedule: str = "step",
        lr_epochs: int | None = None,
    ):
        """Configure training; with no arguments, the FFL recipe.

        The default optimisers are `PyTorchSGD` (PyTorch's momentum form; momentum 0.9,
        Nesterov) with a step schedule: ``learning_rate``, multiplied by ``lr_decay`` at
        each epoch of ``lr_milestones`` (like PyTorch's ``MultiStepLR``). The schedule and
        the ramp-up ``w(t)`` read the epoch from the student optimiser's step counter and
        `steps_per_epoch`, so any way of calling `fit` (one call for all epochs, or one call
        per epoch with ``initial_epoch``) trains with the same rates. The optimisers are made
        by `fit` (or `prepare`) once the steps per epoch are known. A user-supplied optimiser
        keeps its own update rule and schedule; the L2 terms are added for it too.

        Args:
            student_optimizer: optimiser for every student weight (default: recipe SGD).
            fusion_optimizer: optimiser for the fusion path (default: recipe SGD).
            learning_rate: initial rate of the default optimisers.
            lr_milestones: epochs (from 0) at whose start the rate is multiplied by ``lr_decay``.
            lr_decay: decay factor at each milestone.
            student_weight_decay: L2 coefficient added to student gradients (PyTorch
                SGD ``weight_decay`` meaning, not decoupled).
            fusion_weight_decay: L2 coefficient added to fusion-path gradients.
            steps_per_epoch: optimiser steps per epoch; None lets the first `fit` take them
                from its data. Fixed from then on.
            jit_compile: compile the steps with XLA: on TensorFlow ``"auto"`` is off on CPU; on JAX
                ``"auto"`` is `jax.jit`, and False runs the steps op by op (many times slower).
            steps_per_execution: batches run per call of the compiled step.
            lr_schedule: ``"step"`` (the milestones above) or ``"cosine"`` (`CosineEpochDecay` over
                ``lr_epochs``, the milestones and decay unused).
            lr_epochs: the epochs a cosine schedule anneals over (the run's length); required for it.
        """
        if keras.backend.backend() not in TRAINING_BACKENDS:
            raise RuntimeError(
                f"OnlineDistiller trains with the {', '.join(TRAINING_BACKENDS)} backends; KERAS_BACKEND is "
                f"{keras.backend.backend()!r}."
            )
        self._optimizer_settings = dict(
            learning_rate=checked_number("learning_rate", learning_rate, inclusive=False),
            lr_milestones=checked_milestones(lr_milestones),
            lr_decay=checked_number("lr_decay", lr_decay, inclusive=False),
            student_weight_decay=checked_number("student_weight_decay", student_weight_decay),
            fusion_weight_decay=checked_number("fusion_weight_decay", fusion_weight_decay),
            steps_per_epoch=None if steps_per_epoch is None else checked_steps_per_epoch(steps_per_epoch),
            lr_schedule=_checked_schedule(lr_schedule, lr_epochs),
            lr_epochs=lr_epochs,
        )
        self.student_optimizer = self._maybe_loss_scaled(student_optimizer)
        self.fusion_optimizer = self._maybe_loss_scaled(fusion_optimizer) if self.fusion is not None else None
        # No optimizer for Keras to make and build: the two optimisers stand in for it.
        super().compile(optimizer=None, jit_compile=jit_compile, steps_per_execution=steps_per_execution)
        self.optimizer = _BothOptimizers(self)

    def _maybe_loss_scaled(self, optimizer):
        if optimizer is None:
            return None
        if self._uses_float16() and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            return keras.optimizers.LossScaleOptimizer(optimizer)
        return optimizer

    def _uses_float16(self) -> bool:
        return any(layer.compute_dtype == "float16" for layer in self.students_net.layers)

    def _default_optimizer(self, name: str):
        s = self._optimizer_settings
        if s["lr_schedule"] == "cosine":
            schedule = CosineEpochDecay(s["learning_rate"], self.steps_per_epoch, s["lr_epochs"])
        else:
            schedule = MultiStepDecay(s["learning_rate"], self.steps_per_epoch, s["lr_milestones"], s["lr_decay"])
        return self._maybe_loss_scaled(PyTorchSGD(schedule, momentum=0.9, nesterov=True, name=name))

    def prepare(self, steps_per_epoch: int | None = None) -> None:
        """Fix the steps per epoch, create the default optimisers and build the optimisers' state.

        `fit` calls this; call it yourself to restore optimiser state before training.

        Args:
            steps_per_epoch: optimiser steps per epoch, if `compile` or an earlier `fit` or
                `prepare` has not fixed them yet; once fixed, only the same value is accepted.
        """
        if self._optimizer_settings is None:
            raise RuntimeError("Call compile() before fit() or prepare().")
        if steps_per_epoch is not None:
            steps_per_epoch = checked_steps_per_epoch(steps_per_epoch)
            if self.steps_per_epoch is None:
                self._optimizer_settings["steps_per_epoch"] = steps_per_epoch
            elif steps_per_epoch != self.steps_per_epoch:
                raise ValueError(
                    f"steps_per_epoch is fixed at {self.steps_per_epoch} (the schedule and w(t) count epochs in "
                    f"it), got {steps_per_epoch}; compile() again to change it."
                )
        if self.steps_per_epoch is None:
            raise ValueError(
                "The steps per epoch are not known yet: pass prepare(steps_per_epoch=...) or "
                "compile(steps_per_epoch=...), or call fit()."
            )
        with self._strategy_scope():
            if self.student_optimizer is None:
                self.student_optimizer = self._default_optimizer("student_sgd")
            if self.fusion is not None and self.fusion_optimizer is None:
                self.fusion_optimizer = self._default_optimizer("fusion_sgd")
            if not self.student_optimizer.built:
                self.student_optimizer.build(self.students_net.trainable_variables)
            if self.fusion_optimizer is not None and not self.fusion_optimizer.built:
                self.fusion_optimizer.build(self.fusion.trainable_variables)

    def _strategy_scope(self):
        # Optimiser state must live in the model's strategy (mirrored under tf.distribute),
        # even when fit() is called outside strategy.scope() as Keras allows. Other backends
        # have no strategies.
        if keras.backend.backend() == "tensorflow":
            return self.distribute_strategy.scope()
        return contextlib.nullcontext()

    @staticmethod
    def _steps_in(x, batch_size, steps_per_epoch):
        if steps_per_epoch:
            return int(steps_per_epoch)
        if hasattr(x, "cardinality"):
            cardinality = int(x.cardinality())
            if cardinality < 1:
                raise ValueError(
                    "Cannot tell the steps per epoch of a dataset of unknown or infinite size; pass steps_per_epoch."
                )
            return cardinality
        if isinstance(x, np.ndarray) or hasattr(x, "shape"):
            return math.ceil(len(x) / (batch_size or 32))
        if hasattr(x, "__len__"):
            return len(x)
        raise ValueError("Cannot tell the steps per epoch of this input; pass steps_per_epoch.")

    def fit(self, x=None, y=None, batch_size=None, epochs=1, steps_per_epoch=None, **kwargs):
        """`keras.Model.fit`, after `prepare`; the first call fixes the steps per epoch from its data if not fixed.

        The first call also fixes an unset ``rampup_epochs`` from its ``epochs`` (see the constructor).
        """
        if self.rampup_epochs is None:
            self.rampup_epochs = recipe.scaled_rampup_epochs(epochs)
        if self._optimizer_settings is not None and self.steps_per_epoch is None:
            self.prepare(self._steps_in(x, batch_size, steps_per_epoch))
        else:
            self.prepare()
        if kwargs.get("verbose", "auto") == "auto" and not sys.stdout.isatty():
            # Keras's bar takes every POSIX process for a terminal and writes ANSI colours and \b/\r redraws into
            # pipes and files: piped, one plain line per epoch (verbose=2) instead.
            kwargs["verbose"] = 2
        return super().fit(x, y, batch_size=batch_size, epochs=epochs, steps_per_epoch=steps_per_epoch, **kwargs)

    def train_on_batch(self, x, y=None, **kwargs):
        """`keras.Model.train_on_batch`, after `prepare`: the steps per epoch must be fixed (by `compile` or an
        earlier `fit`), since the schedule and w(t) count epochs in them; a batch alone cannot tell them.
        """
        self.prepare()
        return super().train_on_batch(x, y, **kwargs)

    # -------------------------------------------------------------- students
    def get_student(self, index: int) -> keras.Model:
        """Student ``index`` as a standalone plain Keras network from images to logits.

        The student is a copy (`mfef_keras.models.plain_keras.to_plain_keras`) holding a snapshot of the
        current weights, not shared with the distiller: it uses Keras built-in layers only, so its saved
        file loads without ``mfef_keras`` on any backend. Call again after more training for new weights.

        Args:
            index: the student's index, in ``[0, num_students)``.
        """
        from mfef_keras.models.plain_keras import to_plain_keras

        if not 0 <= int(index) < self.num_students:
            raise ValueError(f"Student index must be in [0, {self.num_students - 1}], got {index!r}.")
        return to_plain_keras(_students_of(self.students_net)[int(index)])

    def fused_classifier(self) -> keras.Model:
        """The cohort and the method's head as one functional network from images to the fused logits.

        The accuracy option beside the compressed one (`get_student`), for methods with a fused classifier
        (`mfef_keras.distill.methods.fused_methods`: MFEF, FFL, ONE's gated ensemble, PCL's ensemble classifier):
        it serves every student and the head. Its weights are shared with
        the distiller; it holds the package's layers, which `mfef_keras.student_dir.load_keras_file` registers.
        """
        if not self.online_method.has_fused_classifier():
            raise ValueError(
                f"Method {self.method!r} has no fused classifier to export; {', '.join(fused_methods())} have one."
            )
        images = keras.Input(tuple(self.students_net.inputs[0].shape[1:]), name="images")
        outputs = self.students_net(images)
        features, logits = list(outputs[0::2]), [ops.cast(z, "float32") for z in outputs[1::2]]
        fused = self.online_method.head_outputs(self.fusion, features, logits)["fused"]
        return keras.Model(images, fused, name="fused_classifier")

    def student_parameter_counts(self) -> list[int]:
        """Each student's parameter count as a standalone network (a shared trunk counts in each)."""
        return [student.count_params() for student in _students_of(self.students_net)]

    def student_accuracies(self, data, **evaluate_kwargs) -> list[float]:
        """Top-1 accuracy of each student on ``data`` (a dataset or ``(images, labels)``)."""
        if not self.compiled:
            self.compile()
        if isinstance(data, (list, tuple)):
            logs = self.evaluate(data[0], data[1], return_dict=True, verbose=0, **evaluate_kwargs)
        else:
            logs = self.evaluate(data, return_dict=True, verbose=0, **evaluate_kwargs)
        return [float(logs[f"acc_s{i}"]) for i in range(self.num_students)]

    def best_student(self, data, **evaluate_kwargs) -> keras.Model:
        """The student with the highest top-1 accuracy on ``data``, as a standalone `keras.Model`."""
        accuracies = self.student_accuracies(data, **evaluate_kwargs)
        return self.get_student(int(np.argmax(accuracies)))

    # --------------------------------------------------------- serialization
    def get_config(self):
        return dict(
            name=self.name,
            students=keras.saving.serialize_keras_object(self.students_net),
            method=self.method,
            temperature=self.temperature,
            rampup_epochs=self.rampup_epochs,
            ablate=list(self.ablate),
            method_options=dict(self.method_options),
            sync_batchnorm=self.sync_batchnorm,
            teacher=None if self.teacher is None else keras.saving.serialize_keras_object(self.teacher),
            teacher_weight=self.teacher_weight,
        )

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        net = keras.saving.deserialize_keras_object(config.pop("students"))
        teacher = config.pop("teacher", None)
        teacher = None if teacher is None else keras.saving.deserialize_keras_object(teacher)
        return cls(students=_students_of(net), teacher=teacher, **config)

    def get_compile_config(self):
        if self._optimizer_settings is None:
            return None
        return dict(self._optimizer_settings, lr_milestones=list(self._optimizer_settings["lr_milestones"]))

    def compile_from_config(self, config):
        self.compile(**config)
        if self.steps_per_epoch is not None:
            # Build the optimisers now, as Keras does for its own, so that a saved model's
            # optimiser state has variables to load into.
            self.prepare()
