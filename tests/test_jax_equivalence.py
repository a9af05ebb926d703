"""The JAX (and torch) train step computes what the TensorFlow one does: same loss terms, weights, optimiser state.

Each backend runs in its own process (Keras picks its backend once per process). The TensorFlow process
builds every case, writes its initial state as a checkpoint, trains three steps and writes the result; the
JAX and torch processes restore that initial checkpoint, train the same three steps and write theirs. The
steps exercise everything in the objective at once: the KD weight w(t) moves every step (one step per
epoch, a ramp-up over 4 epochs), the learning rate drops before the third step, momentum carries over and
both optimisers add their own L2 term.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import subprocess_env

# method, topology
CASES = [("mfef", "independent"), ("ffl", "shared_trunk"), ("dml", "independent")]
# The backends compared with TensorFlow, each skipped where it is not installed.
OTHERS = [pytest.param("jax", marks=pytest.mark.needs_jax), pytest.param("torch", marks=pytest.mark.needs_torch)]
STEPS = 3
TOLERANCE = 1e-4

_WORKER = """
import json, sys
from pathlib import Path

import keras
import numpy as np

from mfef_keras.distill import OnlineDistiller
from mfef_keras.models import build_students
from mfef_keras.training.checkpoint import load_checkpoint, save_checkpoint

root, cases = Path(sys.argv[1]), json.loads(sys.argv[2])
backend = keras.backend.backend()
rng = np.random.default_rng(0)
images = rng.normal(size=(24, 16, 16, 3)).astype("float32")
labels = rng.integers(0, 4, size=24)
for method, topology in cases:
    keras.utils.set_random_seed(0)
    students = build_students(
        "resnet8", 4, num_students=2, topology=topology, base_width=16, input_shape=(16, 16, 3)
    )
    distiller = OnlineDistiller(students, method=method, rampup_epochs=4)
    distiller.compile(
        learning_rate=0.1,
        lr_milestones=(2,),
        student_weight_decay=0.01,
        fusion_weight_decay=0.005,
        steps_per_epoch=1,
    )
    distiller.prepare()
    initial = root / method / "initial"
    if initial.exists():
        assert load_checkpoint(initial, distiller) == {"backend": "tensorflow"}
    else:
        save_checkpoint(initial, distiller, {"backend": backend})
    steps = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: steps.append({k: float(v) for k, v in logs.items()})
    )
    distiller.fit(images, labels, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[record])
    save_checkpoint(root / method / backend, distiller, {"backend": backend, "logs": steps})
    trained_on_tf = root / method / "tensorflow"
    if backend != "tensorflow":
        # The other direction of a resume: TensorFlow's trained state, restored here and written again.
        keras.utils.set_random_seed(1)
        again = build_students("resnet8", 4, num_students=2, topology=topology, base_width=16, input_shape=(16, 16, 3))
        restored = OnlineDistiller(again, method=method, rampup_epochs=4)
        restored.compile(steps_per_epoch=1)
        restored.prepare()
        state = load_checkpoint(trained_on_tf, restored)
        save_checkpoint(root / method / f"tensorflow_via_{backend}", restored, state)
print("trained", backend)
"""


def _train(root, backend: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _WORKER, str(root), json.dumps(CASES)],
        env=subprocess_env(KERAS_BACKEND=backend),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"trained {backend}" in result.stdout


def _read(path) -> tuple[dict, dict]:
    with np.load(path / "checkpoint.npz") as data:
        arrays = {key: data[key] for key in data.files}
    state = json.loads(bytes(arrays.pop("state")).decode())
    arrays.pop("meta")
    return arrays, state


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The run directory of every case: ``<method>/<initial, or the backend that trained>/checkpoint.npz``."""
    root = tmp_path_factory.mktemp("equivalence")
    _train(root, "tensorflow")
    return root


@pytest.fixture(scope="module", params=OTHERS)
def backend(request, trained) -> str:
    """Each other backend, trained once for all the cases from TensorFlow's initial checkpoints."""
    _train(trained, request.param)
    return request.param


@pytest.mark.parametrize("method", [method for method, _ in CASES])
def test_step_matches_tensorflow_step(trained, method, backend):
    initial, _ = _read(trained / method / "initial")
    tf_arrays, tf_state = _read(trained / method / "tensorflow")
    other_arrays, other_state = _read(trained / method / backend)
    assert tf_state["backend"] == "tensorflow" and other_state["backend"] == backend
    # The other backend restores every variable of TensorFlow's checkpoint exactly: weights, BatchNorm
    # statistics, momentum buffers and step counters (and the checkpoint's own state).
    restored, via_other_state = _read(trained / method / f"tensorflow_via_{backend}")
    assert via_other_state == tf_state and restored.keys() == tf_arrays.keys()
    for key in tf_arrays:
        np.testing.assert_array_equal(restored[key], tf_arrays[key], err_msg=key)

    # Every loss term, accuracy and w(t) after each step (Keras logs running means over the epoch).
    assert len(tf_state["logs"]) == len(other_state["logs"]) == STEPS
    for step, (tf_logs, other_logs) in enumerate(zip(tf_state["logs"], other_state["logs"])):
        assert tf_logs.keys() == other_logs.keys()
        for key in tf_logs:
            assert other_logs[key] == pytest.approx(tf_logs[key], abs=TOLERANCE), f"{key} after step {step + 1}"
    if method != "dml":
        weights = [logs["kd_weight"] for logs in tf_state["logs"]]
        assert weights[0] < weights[1] < weights[2], "w(t) follows the step counter"

    # Weights and BatchNorm statistics, variable by variable.
    assert tf_arrays.keys() == other_arrays.keys() == initial.keys()
    weights = [k for k in tf_arrays if k.startswith("weights/")]
    differences = {k: float(np.max(np.abs(tf_arrays[k] - other_arrays[k]), initial=0.0)) for k in weights}
    assert max(differences.values()) < TOLERANCE, sorted(differences.items(), key=lambda item: -item[1])[:5]
    changed = [k for k in weights if not np.allclose(tf_arrays[k], initial[k])]
    assert len(changed) > len(weights) // 2, "three steps moved the weights"

    # Both optimisers' state. The last step's momentum buffer holds that step's raw gradient, in which a
    # ReLU input within float32 rounding of zero can switch one unit's contribution between backends
    # (seen with dml: an input of 4.8e-7 after two steps moved 0.7 % of the buffer entries by up to
    # 8.4e-4, 0.08 % of the buffers' norm, and the weights, through the learning rate, by 1.6e-5).
    # A wrong term, loss scale or decay moves every entry, by percents.
    optimizers = ["student_optimizer"] + (["fusion_optimizer"] if method != "dml" else [])
    for name in optimizers:
        assert int(other_arrays[f"{name}/iteration"]) == int(tf_arrays[f"{name}/iteration"]) == STEPS
    buffers = [k for k in tf_arrays if k.endswith("_momentum")]
    assert {k.split("/")[0] for k in buffers} == set(optimizers)
    tf_buffers, other_buffers = (
        np.concatenate([arrays[k].ravel() for k in buffers]) for arrays in (tf_arrays, other_arrays)
    )
    assert np.max(np.abs(tf_buffers - other_buffers)) < 2e-3
    assert np.linalg.norm(tf_buffers - other_buffers) < 2e-3 * np.linalg.norm(tf_buffers)
