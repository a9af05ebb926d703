"""Device set-up and the tf.distribute strategy of a run.

tf.distribute belongs to the TensorFlow backend. On JAX a run trains on one device for now (Keras's
`keras.distribution` is the JAX way to spread it), and the options that need tf.distribute are refused.
"""

from __future__ import annotations

import contextlib
import os

from mfef_keras._names import unknown_name_error
from mfef_keras.training.config import STRATEGIES


def _keras_backend() -> str:
    # Importing Keras (and with it TensorFlow) initialises no device, so this may run first.
    import keras

    return keras.backend.backend()


def _tensorflow_only(option: str, backend: str) -> ValueError:
    return ValueError(
        f"{option} uses tf.distribute, which needs the TensorFlow backend; KERAS_BACKEND is {backend!r}. "
        "Run with KERAS_BACKEND=tensorflow, or leave the option out to train on one device."
    )


class OneDevice:
    """The strategy of a run on a backend without tf.distribute: one replica, nothing to enter."""

    num_replicas_in_sync = 1
    cluster_resolver = None

    def scope(self):
        return contextlib.nullcontext()


def configure_cpu_devices(count: int | None) -> None:
    """Split the CPU into ``count`` logical devices; must run before TensorFlow initialises its devices.

    Args:
        count: logical devices wanted, at most the machine's CPU cores; None or 0 leaves the CPU whole.

    Raises:
        ValueError: ``count`` exceeds the CPU cores (replicas would wait on each other without end), or the
            backend is not TensorFlow (the logical devices are TensorFlow's, for tf.distribute).
    """
    if not count:
        return
    backend = _keras_backend()
    if backend != "tensorflow":
        raise _tensorflow_only(f"cpu_devices {count} (--cpu-devices)", backend)
    cores = os.cpu_count() or 1
    if count > cores:
        # Each replica's step waits for all the others at every all-reduce; with more replicas than cores
        # they take turns, and an epoch was seen not to finish in 12 minutes.
        raise ValueError(
            f"cpu_devices {count} (--cpu-devices) is more than the {cores} CPU cores of this machine; "
            f"use {cores} or fewer."
        )
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    wanted = [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == count:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, wanted)
    except RuntimeError as error:
        raise RuntimeError(
            f"Cannot split the CPU into {count} logical devices: TensorFlow has already initialised its devices "
            f"({error}). Set cpu_devices before anything else runs TensorFlow."
        ) from None


def make_strategy(name: str):
    """``default``: one device; ``mirrored``: all GPUs, else all logical CPUs; ``multiworker``: from TF_CONFIG.

    On a backend other than TensorFlow, ``default`` is `OneDevice` and the others are refused.

    Raises:
        ValueError: an unknown name, or a tf.distribute strategy on another backend.
    """
    backend = _keras_backend()
    if backend != "tensorflow":
        if name == "default":
            return OneDevice()
        if name in STRATEGIES:
            raise _tensorflow_only(f"strategy {name} (--strategy)", backend)
        raise unknown_name_error("strategy", name, STRATEGIES)
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy([d.name for d in gpus])
        # Collective all-reduces between logical CPUs must run in the same order on every
        # replica, which two students computed side by side do not guarantee (synchronised
        # BatchNorm then fails with "Shape mismatch in the collective"); reducing on one
        # device has no such ordering constraint.
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise unknown_name_error("strategy", name, STRATEGIES)
