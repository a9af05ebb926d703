"""A record of the software and hardware a run used."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def describe_environment(seed: int) -> dict:
    """Package versions, Python, platform, CPU count and visible TensorFlow devices."""
    import tensorflow as tf

    packages = ["mfef-keras", "keras", "tensorflow", "tensorflow-cpu", "numpy", "tensorflow-datasets"]
    return {
        "packages": {name: v for name in packages if (v := _version(name))},
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "devices": [d.name for d in tf.config.list_logical_devices()],
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "seed": seed,
        "command": " ".join(sys.argv),
    }
