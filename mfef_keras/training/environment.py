"""A record of the software and hardware a run used."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

_PACKAGES = (
    "mfef-keras",
    "keras",
    "tensorflow",
    "tensorflow-cpu",
    "jax",
    "jaxlib",
    "torch",
    "numpy",
    "tensorflow-datasets",
)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _devices(backend: str) -> tuple[list[str], list[str]]:
    """The devices the backend computes on, and those of them that are GPUs."""
    if backend == "jax":
        import jax

        devices = jax.devices()
        return [str(d) for d in devices], [str(d) for d in devices if d.platform == "gpu"]
    if backend == "torch":
        import torch

        gpus = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        return ["cpu", *gpus], gpus
    import tensorflow as tf

    return [d.name for d in tf.config.list_logical_devices()], [d.name for d in tf.config.list_physical_devices("GPU")]


def describe_environment(seed: int) -> dict:
    """The Keras backend, package versions, Python, platform, CPU count and the backend's visible devices."""
    import keras

    backend = keras.backend.backend()
    devices, gpus = _devices(backend)
    return {
        "keras_backend": backend,
        "packages": {name: v for name in _PACKAGES if (v := _version(name))},
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "devices": devices,
        "gpus": gpus,
        "seed": seed,
        "command": " ".join(sys.argv),
    }
