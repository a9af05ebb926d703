"""The distiller on the JAX backend: float16 loss scaling, w(t) in evaluation, saving; each in a JAX process.

The test process runs TensorFlow (conftest), and Keras picks its backend once per process, so every check
runs as a script in a child process with ``KERAS_BACKEND=jax`` and prints ``ok`` when its asserts pass.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import subprocess_env

# Slow: each check compiles the distiller's JAX step in a process of its own (about two minutes together, idle);
# the TensorFlow-JAX equivalence test keeps a JAX train step in the default suite, and .ci/run runs these.
pytestmark = [pytest.mark.needs_jax, pytest.mark.slow]

_SETUP = """
import sys
import keras
import numpy as np
from keras import ops

from mfef_keras.distill import OnlineDistiller
from mfef_keras.models import build_students

assert keras.backend.backend() == "jax"


def make(method="mfef", **kwargs):
    students = build_students("resnet8", 4, num_students=2, base_width=16, input_shape=(16, 16, 3))
    return OnlineDistiller(students, method=method, **kwargs)


rng = np.random.default_rng(0)
images = rng.normal(size=(16, 16, 16, 3)).astype("float32")
labels = rng.integers(0, 4, size=16)
"""


def _run_jax(script: str, *args: str, cwd=None) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _SETUP + script, *args],
        env=subprocess_env(KERAS_BACKEND="jax"),
        capture_output=True,
        text=True,
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip().endswith("ok"), result.stdout[-2000:]


def test_float16_steps_scale_the_loss_statelessly():
    _run_jax("""
keras.mixed_precision.set_global_policy("mixed_float16")
d = make()
d.compile()
before = [np.array(v) for v in d.fusion.trainable_variables]
history = d.fit(images, labels, batch_size=8, epochs=2, verbose=0)
assert all(np.isfinite(v[-1]) for v in history.history.values()), history.history
for optimizer in (d.student_optimizer, d.fusion_optimizer):
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    # Four finite steps, each counted by the optimiser and by its loss scale's growth counter.
    assert int(optimizer.iterations) == 4 and int(optimizer.step_counter) == 4
    assert float(optimizer.dynamic_scale) == 2.0**15
assert any(not np.allclose(b, np.array(v)) for b, v in zip(before, d.fusion.trainable_variables))
print("ok")
""")


def test_evaluation_reads_w_t_from_the_step_counter_as_it_is_now():
    # The compiled test step is traced once; w(t) must still follow the counter, not keep its first value.
    _run_jax("""
from mfef_keras.distill import rampup_weight

# An explicit ramp-up: an unset one is only fixed by the first fit, and evaluation alone never fits.
d = make("ffl", rampup_epochs=80)
d.compile()
d.prepare(steps_per_epoch=1)
first = d.evaluate(images, labels, batch_size=8, verbose=0, return_dict=True)
d.student_optimizer.iterations.assign(40)
later = d.evaluate(images, labels, batch_size=8, verbose=0, return_dict=True)
assert abs(first["kd_weight"] - float(rampup_weight(0, 80))) < 1e-7, first
assert abs(later["kd_weight"] - float(rampup_weight(40, 80))) < 1e-6, later
assert later["loss"] > first["loss"]
print("ok")
""")


def test_distiller_trained_on_jax_saves_and_loads_with_optimiser_state(tmp_path):
    _run_jax(
        """
d = make()
d.compile(learning_rate=0.02)
d.fit(images, labels, batch_size=8, epochs=1, verbose=0)
path = sys.argv[1] + "/distiller.keras"
d.save(path)
loaded = keras.saving.load_model(path)
for ours, theirs in ((d.student_optimizer, loaded.student_optimizer), (d.fusion_optimizer, loaded.fusion_optimizer)):
    assert int(theirs.iterations) == 2 and len(theirs.variables) == len(ours.variables)
    for a, b in zip(ours.variables, theirs.variables):
        np.testing.assert_array_equal(np.array(a), np.array(b))
a, b = d.predict(images, verbose=0), loaded.predict(images, verbose=0)
for key in a:
    np.testing.assert_allclose(a[key], b[key], atol=1e-5)
loaded.fit(images, labels, batch_size=8, epochs=1, verbose=0)
assert int(loaded.student_optimizer.iterations) == 4
print("ok")
""",
        str(tmp_path),
    )
