"""The Keras half of the agreement check with `torch_reference`: train, record everything, save it to an .npz.

torch is never imported here, and TensorFlow only inside `record_keras_steps` on its backend: the CUDA builds of
torch and TensorFlow crash when they share a process (a segfault, no message), so the benchmark records the Keras
steps in one process (on TensorFlow or on JAX) and replays them in PyTorch in another
(`torch_reference.compare_steps`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class KerasSteps:
    """The initial weights, the batch, and each step's logs and weights of a Keras `OnlineDistiller` run.

    Args:
        setup: what the PyTorch side needs to rebuild the model and optimisers: ``backbone``, ``num_classes``,
            ``topology``, ``method``, ``base_width``, ``steps_per_epoch``, ``rampup_epochs``, ``lr_milestones``.
        images: the batch, NHWC float32.
        labels: its labels, int32.
        start: every model variable (moving statistics included) before step 1, keyed by Keras variable path.
        trainable: the paths of the trainable variables.
        logs: each step's logs (loss terms, KD weight, metrics).
        weights: every model variable after each step.
    """

    setup: dict
    images: np.ndarray
    labels: np.ndarray
    start: dict[str, np.ndarray]
    trainable: list[str]
    logs: list[dict[str, float]]
    weights: list[dict[str, np.ndarray]]

    def save(self, path: Path) -> None:
        """Write to ``path`` (.npz); the non-array fields go in as one JSON string."""
        meta = json.dumps(dict(setup=self.setup, trainable=self.trainable, logs=self.logs))
        arrays = {f"start/{k}": v for k, v in self.start.items()}
        for step, weights in enumerate(self.weights):
            arrays.update({f"step{step}/{k}": v for k, v in weights.items()})
        np.savez(path, meta=np.array(meta), images=self.images, labels=self.labels, **arrays)

    @classmethod
    def load(cls, path: Path) -> KerasSteps:
        """Read what `save` wrote."""
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))

            def group(prefix: str) -> dict[str, np.ndarray]:
                return {k[len(prefix) :]: data[k] for k in data.files if k.startswith(prefix)}

            return cls(
                setup=meta["setup"],
                images=data["images"],
                labels=data["labels"],
                start=group("start/"),
                trainable=meta["trainable"],
                logs=meta["logs"],
                weights=[group(f"step{step}/") for step in range(len(meta["logs"]))],
            )


def record_keras_steps(
    backbone: str = "resnet32",
    num_classes: int = 100,
    topology: str = "independent",
    method: str = "mfef",
    batch_size: int = 128,
    base_width: int = 16,
    steps: int = 2,
    seed: int = 0,
    lr_milestones: Sequence[int] = (150, 225),
) -> KerasSteps:
    """Build `OnlineDistiller` as the benchmark does and run ``steps`` of its ``train_function`` on one batch.

    One step per epoch and a 2-epoch ramp-up, so step 1 has KD weight ``exp(-5)`` and step 2 ``exp(-1.25)`` and
    the KD gradients weigh in the second update. On the TensorFlow backend the steps read a `tf.data` iterator;
    on JAX they run the jit-compiled step with the state threaded as `fit` threads it
    (`jax_step.JaxTrainFunction`). ``setup["backend"]`` says which.

    Args:
        backbone: a CIFAR ResNet, ``"resnet<6n+2>"``.
        num_classes: number of logits.
        topology: ``"independent"`` or ``"shared_trunk"``.
        method: ``"mfef"`` or ``"ffl"``.
        batch_size: images in the batch.
        base_width: channels of the first stage.
        steps: training steps to record.
        seed: seeds the weights and the batch.
        lr_milestones: epochs (= steps here) at which the rate drops by 10x.
    """
    import keras

    from mfef_keras.distill import OnlineDistiller
    from mfef_keras.models import build_students

    if not backbone.startswith("resnet"):
        raise ValueError(f"The PyTorch reference builds CIFAR ResNets, not {backbone!r}.")
    setup = dict(
        backbone=backbone,
        num_classes=num_classes,
        topology=topology,
        method=method,
        base_width=base_width,
        steps_per_epoch=1,
        rampup_epochs=2,
        lr_milestones=list(lr_milestones),
        backend=keras.backend.backend(),
    )
    keras.utils.set_random_seed(seed)
    students = build_students(backbone, num_classes, 2, topology, base_width=base_width)
    distiller = OnlineDistiller(students, method, rampup_epochs=setup["rampup_epochs"])
    distiller.compile(lr_milestones=lr_milestones, steps_per_epoch=setup["steps_per_epoch"])
    distiller.prepare()
    variables = distiller.students_net.variables + distiller.fusion.variables
    trainable = sorted(
        v.path for v in distiller.students_net.trainable_variables + distiller.fusion.trainable_variables
    )

    def weights() -> dict[str, np.ndarray]:
        return {v.path: np.array(v.numpy()) for v in variables}

    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch_size, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, num_classes, batch_size).astype("int32")
    start = weights()
    step = _jax_step(distiller, images, labels) if setup["backend"] == "jax" else _tf_step(distiller, images, labels)
    logs, after = [], []
    for _ in range(steps):
        logs.append({k: float(v) for k, v in step().items()})
        after.append(weights())
    return KerasSteps(setup, images, labels, start, trainable, logs, after)


def _tf_step(distiller, images: np.ndarray, labels: np.ndarray) -> Callable[[], dict]:
    """One ``train_function`` call on the batch, from freshly reset metrics, on the TensorFlow backend."""
    import tensorflow as tf

    iterator = iter(tf.data.Dataset.from_tensors((images, labels)).repeat())
    distiller.make_train_function()

    def step() -> dict:
        # Each step's own values, not running means over the steps.
        distiller.reset_metrics()
        return distiller.train_function(iterator)

    return step


def _jax_step(distiller, images: np.ndarray, labels: np.ndarray) -> Callable[[], dict]:
    """One jit-compiled step on the batch on JAX; the variables hold the state after each (for `weights`)."""
    from jax_step import JaxTrainFunction

    train = JaxTrainFunction(distiller)

    def step() -> dict:
        train.reset_metrics()
        logs = train(images, labels)
        train.write_back()
        return logs

    return step
