"""The distiller's steps for Keras's JAX trainer: stateless functions of the variables' values, for `jax.jit`.

Keras's JAX trainer calls ``train_step(state, data)`` with ``state = (trainable, non_trainable, optimizer,
metrics)``, the values of ``model.trainable_variables``, ``model.non_trainable_variables``,
``model.optimizer.variables`` (both optimisers', see `online_distiller._BothOptimizers`) and
``model.metrics_variables``, and expects ``(logs, new_state)``; ``test_step`` gets and returns
``(trainable, non_trainable, metrics)``. The steps run the distiller's own backend-neutral code (the
forward pass, `OnlineDistiller.loss_terms`, the L2 terms and loss scales of ``_optimizer_gradients``, the
trackers) inside `keras.StatelessScope`s that map every variable to its value in ``state``: reads see the
state, and writes (BatchNorm statistics, optimiser slots, metrics) are collected instead of applied.
"""

from __future__ import annotations

import jax
import keras
import numpy as np
from jax.experimental import io_callback


def _model_state(distiller, trainable: list, non_trainable: list) -> list:
    return list(zip(distiller.trainable_variables, trainable)) + list(
        zip(distiller.non_trainable_variables, non_trainable)
    )


def train_step(distiller, state: tuple, data) -> tuple:
    """One step of both optimisers, as a pure function of ``state``.

    Args:
        distiller: the compiled and prepared `OnlineDistiller`.
        state: ``(trainable, non_trainable, optimizer, metrics)`` variable values (Keras's JAX trainer's).
        data: an ``(images, labels)`` batch.

    Returns:
        ``(logs, new_state)``, the state in the same layout.
    """
    trainable, non_trainable, optimizer_values, metric_values = state
    images, labels = distiller._unpack(data)
    optimizer_state = list(zip(distiller.optimizer.variables, optimizer_values))

    def scaled_loss(trainable):
        # The optimisers' state is mapped too: w(t) reads the step counter, float16 the loss scale.
        mapping = _model_state(distiller, trainable, non_trainable) + optimizer_state
        with keras.StatelessScope(state_mapping=mapping) as scope:
            logits, extras = distiller._forward(images, training=True)
            terms = distiller.loss_terms(labels, logits, extras)
            loss = distiller._scaled_loss(terms)
        updated = [scope.get_current_value(v) for v in distiller.non_trainable_variables]
        return loss, (terms, logits, extras, updated)

    (_, (terms, logits, extras, non_trainable)), grads = jax.value_and_grad(scaled_loss, has_aux=True)(trainable)
    trainable, optimizer_values = _apply(distiller, grads, trainable, optimizer_state)
    non_trainable = _update_averages(distiller, trainable, non_trainable, optimizer_values)
    logs, metric_values = _update_metrics(distiller, metric_values, terms, labels, logits, extras)
    return logs, (trainable, non_trainable, optimizer_values, metric_values)


def _apply(distiller, grads: list, trainable: list, optimizer_state: list) -> tuple[list, list]:
    """Each optimiser's ``stateless_apply`` on its own variables; the new trainable and optimiser values.

    Args:
        distiller: the `OnlineDistiller`.
        grads: gradients of the scaled loss, in the order of ``distiller.trainable_variables``.
        trainable: the trainable values the gradients were taken at, in the same order.
        optimizer_state: ``(variable, value)`` of ``distiller.optimizer.variables``, student optimiser first.
    """
    position = {id(v): i for i, v in enumerate(distiller.trainable_variables)}
    groups = [[position[id(v)] for v in variables] for variables in distiller._trained_variables()]
    student_at, fusion_at = groups
    # Read under the optimisers' state: the gradients are scaled by the current loss scales.
    with keras.StatelessScope(state_mapping=optimizer_state):
        per_optimizer = distiller._optimizer_gradients(
            [grads[i] for i in student_at + fusion_at],
            [trainable[i] for i in student_at],
            [trainable[i] for i in fusion_at],
        )
    new_trainable, new_optimizer_values, start = list(trainable), [], 0
    for optimizer, at, optimizer_grads in zip(distiller.optimizer.optimizers, groups, per_optimizer):
        end = start + len(optimizer.variables)
        values, optimizer_values = optimizer.stateless_apply(
            [value for _, value in optimizer_state[start:end]], optimizer_grads, [trainable[i] for i in at]
        )
        for i, value in zip(at, values):
            new_trainable[i] = value
        new_optimizer_values += optimizer_values
        start = end
    return new_trainable, new_optimizer_values


def _update_averages(distiller, trainable: list, non_trainable: list, optimizer_values: list) -> list:
    """The non-trainable values after the method's averaging step (`OnlineDistiller.update_averages`).

    The step reads the updated weights and step counter, so it runs on the new state; the values it
    assigns (a method's running averages of the weights) come back in the non-trainable state.
    """
    if distiller.averages is None:
        return non_trainable
    mapping = _model_state(distiller, trainable, non_trainable)
    mapping += list(zip(distiller.optimizer.variables, optimizer_values))
    with keras.StatelessScope(state_mapping=mapping) as scope:
        distiller.update_averages()
    return [scope.get_current_value(v) for v in distiller.non_trainable_variables]


def _update_metrics(
    distiller, metric_values: list, terms: dict, labels, logits: list, extras: dict
) -> tuple[dict, list]:
    """The distiller's trackers updated from ``metric_values``; the logs and the new metric values."""
    with keras.StatelessScope(state_mapping=list(zip(distiller.metrics_variables, metric_values))) as scope:
        logs = distiller._update_trackers(terms, labels, logits, extras)
    return logs, [scope.get_current_value(v) for v in distiller.metrics_variables]


def test_step(distiller, state: tuple, data) -> tuple:
    """The loss terms and accuracies of one batch in inference mode, as a pure function of ``state``.

    Args:
        distiller: the compiled `OnlineDistiller`.
        state: ``(trainable, non_trainable, metrics)`` variable values (Keras's JAX trainer's).
        data: an ``(images, labels)`` batch.

    Returns:
        ``(logs, new_state)``, the state in the same layout.
    """
    trainable, non_trainable, metric_values = state
    images, labels = distiller._unpack(data)
    mapping = _model_state(distiller, trainable, non_trainable) + _step_counter(distiller)
    with keras.StatelessScope(state_mapping=mapping):
        logits, extras = distiller._forward(images, training=False)
        terms = distiller.loss_terms(labels, logits, extras)
    logs, metric_values = _update_metrics(distiller, metric_values, terms, labels, logits, extras)
    return logs, (trainable, non_trainable, metric_values)


def _step_counter(distiller) -> list:
    """``(counter, value)`` of the student optimiser's step counter as the step runs; empty if there is none yet.

    w(t) in the test logs needs the counter, and Keras's JAX trainer gives a test step no optimiser
    state. A variable read while `jax.jit` traces would be a constant of the compiled step, its value at
    the first evaluation serving every later one, so the counter is read from the host when the step runs.
    """
    optimizer = distiller.student_optimizer
    if optimizer is None or distiller.steps_per_epoch is None:
        return []
    counter = optimizer.iterations
    value = io_callback(lambda: np.asarray(counter.value), jax.ShapeDtypeStruct(counter.shape, counter.dtype))
    return [(counter, value)]
