"""The benchmark's PyTorch reference computes what `OnlineDistiller` computes (skipped where torch is absent)."""

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from torch_reference import SameConv2d, compare_one_step  # noqa: E402

TOLERANCE = 1e-4


def test_stride2_conv_pads_like_tensorflow_same():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    images = rng.standard_normal((2, 8, 8, 3)).astype("float32")
    kernel = rng.standard_normal((3, 3, 3, 4)).astype("float32")
    expected = tf.nn.conv2d(images, kernel, strides=2, padding="SAME").numpy()
    conv = SameConv2d(3, 4, 3, stride=2)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()))
        nchw = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
        got = conv(nchw).numpy().transpose(0, 2, 3, 1)
        # PyTorch's symmetric padding=1 samples other pixels: the reason for SameConv2d.
        symmetric = torch.nn.functional.conv2d(nchw, conv.weight, stride=2, padding=1).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(symmetric, expected, atol=1e-3)


def test_loss_terms_and_updates_match_keras():
    comparison = compare_one_step("resnet8", num_classes=10, method="mfef", batch_size=8, base_width=4, steps=2)
    for step in comparison.steps:
        assert set(step.terms) == {"ce_s0", "ce_s1", "ce_fused", "kd_s0", "kd_s1", "kd_fused", "loss", "kd_weight"}
        for name, (keras_value, torch_value) in step.terms.items():
            assert torch_value == pytest.approx(keras_value, rel=TOLERANCE), name
    assert comparison.max_term_rel_diff < TOLERANCE
    assert comparison.max_update_rel_diff < TOLERANCE
    # The KD weight ramps up from the step counter: exp(-5) at epoch 0, exp(-1.25) at epoch 1 of 2.
    assert [s.terms["kd_weight"][1] for s in comparison.steps] == pytest.approx([np.exp(-5), np.exp(-1.25)])
