"""Spike (issue 25, item 7): a distiller that overrides only ``compute_loss``, as Keras core's ``Distiller`` does.

Today `OnlineDistiller` writes its own ``train_step`` (TensorFlow, torch) and a JAX step of its own, with two
optimisers (students, fusion head) whose only difference in the recipe is the L2 coefficient. The candidate keeps
Keras's own train steps and one optimiser, and adds each group's L2 as a loss term ``wd / 2 * sum(w**2)``, whose
gradient ``wd * w`` is what `PyTorchSGD`'s coupled weight decay adds today. It wraps the same networks and the same
loss terms (`OnlineDistiller.loss_terms`); ``w(t)`` reads the one optimiser's step counter.

Measured here, on the running backend, from the same initial weights and batches:
- fidelity: the largest difference of any trained weight, and of the logged loss, after three steps whose w(t) and
  learning rate change every step (the settings of tests/test_jax_equivalence.py); adopt only within its 1e-4;
- speed: milliseconds per compiled step of each, the median of rounds that alternate between the two.

    python benchmarks/compute_loss_spike.py                      # TensorFlow
    KERAS_BACKEND=jax python benchmarks/compute_loss_spike.py    # JAX
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import types

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from mfef_keras.distill import OnlineDistiller, PyTorchSGD  # noqa: E402
from mfef_keras.distill.schedules import MultiStepDecay  # noqa: E402
from mfef_keras.models import build_students  # noqa: E402

SETTINGS = dict(learning_rate=0.1, lr_milestones=(2,), student_weight_decay=0.01, fusion_weight_decay=0.005)


class LossOnlyDistiller(keras.Model):
    """The candidate: Keras's train step and one optimiser; the distiller's loss terms and the L2 as losses.

    Args:
        distiller: a compiled `OnlineDistiller` whose networks and loss terms are used; its student optimiser is
            replaced by this model's step counter, so that ``w(t)`` counts this model's steps.

    Example:
        >>> candidate = LossOnlyDistiller(distiller)
        >>> candidate.compile(optimizer=PyTorchSGD(0.1, momentum=0.9, nesterov=True))
    """

    def __init__(self, distiller: OnlineDistiller, **kwargs):
        super().__init__(**kwargs)
        self.distiller = distiller
        # Keras's JAX trainer gives compute_loss the model's variables but not the optimiser's, so w(t) cannot read
        # the optimiser's step counter there: the model counts its own steps, a non-trainable variable it assigns.
        self.steps_taken = self.add_weight(shape=(), dtype="int32", initializer="zeros", trainable=False)
        distiller.student_optimizer = types.SimpleNamespace(iterations=self.steps_taken)

    def call(self, images, training=None):
        logits, extras = self.distiller._forward(images, training=training)
        return {"logits": logits, "extras": extras}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        terms = self.distiller.loss_terms(y, y_pred["logits"], y_pred["extras"])
        if training:
            self.steps_taken.assign(self.steps_taken + 1)
        student_vars, fusion_vars = self.distiller._trained_variables()
        settings = self.distiller._optimizer_settings
        l2 = [(settings["student_weight_decay"], student_vars), (settings["fusion_weight_decay"], fusion_vars)]
        penalty = sum(0.5 * decay * ops.sum(ops.square(v)) for decay, group in l2 for v in group)
        return terms["loss"] + penalty


# FFL's students share their first stage, as in the official code; the others are independent networks.
TOPOLOGY = {"ffl": "shared_trunk", "mfef": "independent", "dml": "independent"}


def _cohort(method: str, seed: int, width: int, shape: tuple[int, int, int]) -> OnlineDistiller:
    keras.utils.set_random_seed(seed)
    students = build_students(
        "resnet8", 4, num_students=2, topology=TOPOLOGY[method], base_width=width, input_shape=shape
    )
    distiller = OnlineDistiller(students, method=method, rampup_epochs=4)
    distiller.compile(steps_per_epoch=1, **SETTINGS)
    return distiller


def _pair(method: str, width: int, shape: tuple[int, int, int]) -> tuple[OnlineDistiller, LossOnlyDistiller]:
    today = _cohort(method, 0, width, shape)
    today.prepare()
    wrapped = _cohort(method, 1, width, shape)
    for net in ("students_net", "fusion") if today.fusion is not None else ("students_net",):
        for target, source in zip(getattr(wrapped, net).weights, getattr(today, net).weights, strict=True):
            target.assign(ops.convert_to_numpy(source))
    candidate = LossOnlyDistiller(wrapped)
    schedule = MultiStepDecay(SETTINGS["learning_rate"], 1, SETTINGS["lr_milestones"], 0.1)
    candidate.compile(optimizer=PyTorchSGD(schedule, momentum=0.9, nesterov=True), jit_compile="auto")
    candidate.optimizer.build(candidate.trainable_variables)
    return today, candidate


def fidelity(method: str) -> dict[str, float]:
    """Largest weight and loss differences after three steps of batch 8 on the same 24 images."""
    rng = np.random.default_rng(0)
    images = rng.normal(size=(24, 16, 16, 3)).astype("float32")
    labels = rng.integers(0, 4, size=24)
    today, candidate = _pair(method, 16, (16, 16, 3))
    losses = {}
    for name, model in (("today", today), ("candidate", candidate)):
        steps = []
        record = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs, steps=steps: steps.append(float(logs["loss"]))
        )
        model.fit(images, labels, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[record])
        losses[name] = steps
    student_vars, fusion_vars = today._trained_variables()
    wrapped_student, wrapped_fusion = candidate.distiller._trained_variables()
    weight_diff = max(
        float(np.max(np.abs(ops.convert_to_numpy(a) - ops.convert_to_numpy(b))))
        for a, b in zip(student_vars + fusion_vars, wrapped_student + wrapped_fusion)
    )
    # Keras logs the candidate's loss with its L2 penalty included; today's logged loss excludes it.
    return {
        "max |weight diff| after 3 steps": weight_diff,
        "steps counted by w(t) / by the optimiser": f"{int(ops.convert_to_numpy(candidate.steps_taken))} / "
        f"{int(ops.convert_to_numpy(candidate.optimizer.iterations))}",
        "loss step 1 today / candidate": f"{losses['today'][0]:.5f} / {losses['candidate'][0]:.5f}",
    }


def speed(method: str, width: int, batch: int, rounds: int, steps: int) -> tuple[float, float]:
    """Milliseconds per compiled step (today, candidate) at CIFAR size, median over alternating rounds."""
    rng = np.random.default_rng(0)
    images = rng.normal(size=(batch * steps, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, 4, size=batch * steps)
    today, candidate = _pair(method, width, (32, 32, 3))
    times = {"today": [], "candidate": []}
    for model in (today, candidate):
        model.fit(images[: 2 * batch], labels[: 2 * batch], batch_size=batch, epochs=1, verbose=0)
    for _ in range(rounds):
        for name, model in (("today", today), ("candidate", candidate)):
            start = time.perf_counter()
            model.fit(images, labels, batch_size=batch, epochs=1, shuffle=False, verbose=0)
            times[name].append(1000 * (time.perf_counter() - start) / steps)
    return statistics.median(times["today"]), statistics.median(times["candidate"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", choices=sorted(TOPOLOGY), default="mfef")
    parser.add_argument("--width", type=int, default=16, help="base width of the two resnet8 students")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed round")
    args = parser.parse_args()
    print(f"backend {keras.backend.backend()}, {args.method} on 2 x resnet8")
    for key, value in fidelity(args.method).items():
        print(f"  {key}: {value}")
    today, candidate = speed(args.method, args.width, args.batch, args.rounds, args.steps)
    print(f"  step at width {args.width}, batch {args.batch}, 32x32: today {today:.1f} ms, candidate {candidate:.1f}")
    print(f"  candidate / today: {candidate / today:.2f}x")


if __name__ == "__main__":
    main()
