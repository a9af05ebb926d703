"""Test set-up: TensorFlow backend, a private KERAS_HOME, two logical CPU devices, and the `needs_*` markers.

A test that needs an optional package carries ``@pytest.mark.needs_jax``, ``needs_torch`` or
``needs_python312`` and is skipped, with the reason naming what brings it, where that is missing; the same
marker selects those tests (``pytest -m needs_torch``) once it is installed.
"""

import importlib.util
import os
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Keras writes keras.json (and get_file caches) under KERAS_HOME on first import.
os.environ["KERAS_HOME"] = tempfile.mkdtemp(prefix="keras_home_")

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tests.helpers import python_312  # noqa: E402

# Two logical CPUs so MirroredStrategy can be tested on a machine without GPUs; this must
# happen before TensorFlow initialises its devices.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

# What each `needs_*` marker needs: whether it is there, and what to install when it is not.
OPTIONAL = {
    "needs_jax": (
        lambda: importlib.util.find_spec("jax") is not None,
        "JAX is not installed: the dev extra brings it (pip install -e '.[cpu,dev]'), as does the jax extra",
    ),
    "needs_torch": (
        lambda: importlib.util.find_spec("torch") is not None,
        "torch is not installed: no extra brings it (PyPI's build pulls CUDA); install PyTorch's CPU build "
        "as the README's Training speed section shows",
    ),
    "needs_serve": (
        lambda: all(importlib.util.find_spec(name) is not None for name in ("kserve", "tritonclient")),
        "kserve or tritonclient is not installed: the serve extra brings them (pip install -e '.[cpu,dev,serve]' "
        "in a virtualenv of its own: kserve pins protobuf 6 and ml_dtypes 0.5)",
    ),
    "needs_python312": (
        lambda: python_312() is not None,
        "no Python 3.12 interpreter: install one (e.g. pyenv install 3.12) and put python3.12 on the PATH",
    ),
}


def pytest_configure(config: pytest.Config) -> None:
    for marker, (_, missing) in OPTIONAL.items():
        config.addinivalue_line("markers", f"{marker}: skipped where missing ({missing})")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Checked once per marker, not per test: find_spec and the interpreter look-up touch the disk.
    present = {}
    for item in items:
        for marker in OPTIONAL.keys() & {mark.name for mark in item.iter_markers()}:
            if marker not in present:
                present[marker] = OPTIONAL[marker][0]()
            if not present[marker]:
                item.add_marker(pytest.mark.skip(reason=OPTIONAL[marker][1]))


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    keras.utils.set_random_seed(0)
    yield
    keras.mixed_precision.set_global_policy("float32")
    keras.backend.clear_session()
