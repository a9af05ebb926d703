"""The package against a PyTorch re-implementation of the official FFL code (`needs_torch`: skipped without torch).

`benchmarks/torch_reference.py` rebuilds, layer for layer and in PyTorch's own conventions (``padding=1``
convolutions, `torch.optim.SGD`, `MultiStepLR`), what FFL-pytorch's `FFL_ResNet` and `Fusion_module` compute.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
TOLERANCE = 1e-4

# The reference imports torch, so each test imports it: a missing torch is then a skip, not a collection error.
pytestmark = pytest.mark.needs_torch


def test_ffl_shared_trunk_resnet32_matches_the_official_model_in_train_and_eval_mode():
    from torch_reference import compare_forward

    diffs = compare_forward("resnet32", num_classes=100, topology="shared_trunk", method="ffl", batch_size=8)
    for mode in ("train", "eval"):
        assert set(diffs[mode]) >= {"s0", "s1", "fused", "ce_s0", "ce_s1", "ce_fused", "kd_s0", "kd_fused", "loss"}
        for name, value in diffs[mode].items():
            assert value < TOLERANCE, f"{mode} {name}: {value:.2e}"


@pytest.mark.parametrize("method, topology", [("ffl", "shared_trunk"), ("mfef", "independent")])
def test_two_sgd_steps_across_a_milestone_match_pytorch(method, topology):
    # A milestone after step 1 (one step per epoch): the rate drops from 0.1 to 0.01 between the two
    # steps, where an optimiser that keeps its velocity in units of the rate would differ by ~37 %.
    from torch_reference import compare_one_step

    comparison = compare_one_step(
        "resnet8",
        num_classes=10,
        topology=topology,
        method=method,
        batch_size=8,
        base_width=4,
        lr_milestones=(1,),
        float64_reference=True,
    )
    for step in comparison.steps:
        for name, (keras_value, torch_value) in step.terms.items():
            assert torch_value == pytest.approx(keras_value, rel=TOLERANCE), name
        # The weights are held to PyTorch's semantics computed in float64, not to PyTorch's float32 rounding:
        # on some CPUs torch's own float32 step is 1.4e-4 from its float64 one after the drop (Keras's: 2e-6).
        assert step.keras_vs_fp64 < TOLERANCE
    assert comparison.max_term_rel_diff < TOLERANCE
    # The KD weight ramps up from the step counter: exp(-5) at epoch 0, exp(-1.25) at epoch 1 of 2.
    assert [s.terms["kd_weight"][1] for s in comparison.steps] == pytest.approx([np.exp(-5), np.exp(-1.25)])


@pytest.mark.slow  # a JAX process compiling two steps: ~40 s of CPU; the TensorFlow-JAX equivalence test is quicker
@pytest.mark.needs_jax
def test_the_jax_step_as_the_benchmark_drives_it_matches_pytorch(tmp_path):
    # The benchmark's JAX record (jit-compiled train_function, state threaded as fit threads it) in a process
    # of its own on the JAX backend, replayed here in PyTorch: the same check as TensorFlow's above.
    from keras_steps import KerasSteps
    from torch_reference import compare_steps

    record = tmp_path / "jax.npz"
    code = (
        "import sys; sys.path.insert(0, 'benchmarks'); from keras_steps import record_keras_steps; "
        "record_keras_steps('resnet8', num_classes=10, topology='independent', method='mfef', batch_size=8, "
        f"base_width=4, lr_milestones=(1,)).save({str(record)!r})"
    )
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    steps = KerasSteps.load(record)
    assert steps.setup["backend"] == "jax"
    comparison = compare_steps(steps)
    assert comparison.max_term_rel_diff < TOLERANCE
    assert comparison.max_update_rel_diff < TOLERANCE
