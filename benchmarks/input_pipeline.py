"""Input-pipeline throughput next to the training step it feeds, measured side by side in one run.

Measures the training pipeline of `mfef_keras.data` (shuffle, pad + random crop (+ flip), normalise, batch 128)
on the embedded digits and on synthetic CIFAR-shaped uint8 arrays pushed through the same code path, and the
images/s of one MFEF training step (two ResNet-32 students, CIFAR-100 head) on a repeated random batch and
fed by the augmented pipeline. The ratio says how many times faster the pipeline is than the step; on a
CPU-only machine both share the same cores, so a pipeline only a few times faster than the step slows it.

Run: ``python benchmarks/input_pipeline.py`` (about 1.5 minutes on 2 otherwise idle cores).
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # tf.data feeds the benchmark
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import time  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mfef_keras.data import make_dataset  # noqa: E402
from mfef_keras.data.pipeline import build_pipeline  # noqa: E402
from mfef_keras.data.tfds_cifar import AUGMENTATION, MEAN, STD  # noqa: E402
from mfef_keras.distill import OnlineDistiller  # noqa: E402
from mfef_keras.models import get_backbone  # noqa: E402

BATCH = 128
CIFAR_SHAPE = (32, 32, 3)
SYNTHETIC_EXAMPLES = 10_000
PIPELINE_EPOCHS = {"digits": 10, "cifar": 2}
WARMUP_STEPS = 2
TIMED_STEPS = 8


def pipeline_rate(dataset: tf.data.Dataset, epochs: int) -> float:
    """Images/s of iterating ``dataset`` for ``epochs`` epochs, after one warm-up epoch that fills the cache."""
    for _ in dataset:
        pass
    count = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for images, _ in dataset:
            count += int(images.shape[0])
    return count / (time.perf_counter() - start)


def cifar_shaped_pipeline(name: str, training: bool) -> tf.data.Dataset:
    """Random CIFAR-shaped uint8 examples through `build_pipeline` with ``name``'s augmentation and constants."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (SYNTHETIC_EXAMPLES, *CIFAR_SHAPE), dtype=np.uint8)
    labels = rng.integers(0, 100, SYNTHETIC_EXAMPLES, dtype=np.int32)
    return build_pipeline(
        tf.data.Dataset.from_tensor_slices((images, labels)),
        num_examples=SYNTHETIC_EXAMPLES,
        image_shape=CIFAR_SHAPE,
        mean=MEAN[name],
        std=STD[name],
        augmentation=AUGMENTATION[name],
        batch_size=BATCH,
        training=training,
        seed=0,
        cache=True,
    )


def train_rate(distiller: OnlineDistiller, dataset: tf.data.Dataset) -> float:
    """Images/s of ``distiller.fit`` on ``dataset`` (infinite), after a warm-up that traces the step."""
    # shuffle=False: the dataset shuffles itself (Keras warns otherwise).
    distiller.fit(dataset, epochs=1, steps_per_epoch=WARMUP_STEPS, shuffle=False, verbose=0)
    start = time.perf_counter()
    distiller.fit(dataset, epochs=1, steps_per_epoch=TIMED_STEPS, shuffle=False, verbose=0)
    return TIMED_STEPS * BATCH / (time.perf_counter() - start)


def main() -> None:
    started = time.perf_counter()
    rows = [
        (
            "digits train pipeline (32x32x1, pad 2 + crop)",
            pipeline_rate(make_dataset("digits", "train", BATCH, training=True), PIPELINE_EPOCHS["digits"]),
        ),
        (
            "CIFAR-10-shaped train pipeline (zero pad 4 + crop + flip)",
            pipeline_rate(cifar_shaped_pipeline("cifar10", training=True), PIPELINE_EPOCHS["cifar"]),
        ),
        (
            "CIFAR-100-shaped train pipeline (reflect pad 4 + crop + flip)",
            pipeline_rate(cifar_shaped_pipeline("cifar100", training=True), PIPELINE_EPOCHS["cifar"]),
        ),
        (
            "CIFAR-shaped test pipeline (normalise only)",
            pipeline_rate(cifar_shaped_pipeline("cifar100", training=False), PIPELINE_EPOCHS["cifar"]),
        ),
    ]

    distiller = OnlineDistiller([get_backbone("resnet32", 100) for _ in range(2)], method="mfef")
    distiller.compile()
    distiller.prepare(steps_per_epoch=100)
    rng = np.random.default_rng(0)
    batch = (
        rng.normal(size=(BATCH, *CIFAR_SHAPE)).astype(np.float32),
        rng.integers(0, 100, BATCH).astype(np.int32),
    )
    step_rate = train_rate(distiller, tf.data.Dataset.from_tensors(batch).repeat())
    fed_rate = train_rate(distiller, cifar_shaped_pipeline("cifar100", training=True).repeat())

    print(f"\nbatch {BATCH}, {os.cpu_count()} CPU cores, TensorFlow {tf.__version__}")
    print(f"{'workload':<64} {'img/s':>9} {'x train step':>13}")
    print("-" * 88)
    for label, rate in rows:
        print(f"{label:<64} {rate:>9,.0f} {rate / step_rate:>13.1f}")
    print(f"{'MFEF train step, 2x ResNet-32, repeated random batch':<64} {step_rate:>9,.0f} {1.0:>13.1f}")
    print(
        f"{'MFEF train step fed by the CIFAR-100-shaped train pipeline':<64} {fed_rate:>9,.0f} "
        f"{fed_rate / step_rate:>13.2f}"
    )
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
