import keras
import numpy as np
import pytest

from mfef_keras.layers import ChannelAttention, DualAttention, FusionHead, MultiScaleBlock, SpatialAttention
from tests.helpers import check_layer


@pytest.mark.parametrize("input_projection", [True, False])
def test_multi_scale_block(tmp_path, input_projection):
    check_layer(MultiScaleBlock(splits=4, input_projection=input_projection), (2, 8, 8, 16), (2, 8, 8, 16), tmp_path)


def test_multi_scale_block_other_width(tmp_path):
    check_layer(MultiScaleBlock(splits=2, filters=12), (2, 4, 4, 8), (2, 4, 4, 12), tmp_path)


def test_multi_scale_block_groups_see_growing_receptive_fields():
    # With y_k depending on y_{k-1}, a change at one pixel of group 2 reaches farther
    # in the later groups' outputs: the multi-scale property of the block.
    block = MultiScaleBlock(splits=4, input_projection=False)
    x = np.zeros((1, 15, 15, 8), "float32")
    block(x)
    inner = []
    original = block._fuse_conv.call
    block._fuse_conv.call = lambda t: inner.append(t) or original(t)
    block(x)
    base = keras.ops.convert_to_numpy(inner[-1])
    x[0, 7, 7, 2] = 5.0
    block(x)
    # group width 2: channels 2-3 are group 2, 4-5 group 3, 6-7 group 4.
    diff = np.abs(keras.ops.convert_to_numpy(inner[-1]) - base)[0]
    reach = [int((diff[..., c : c + 2].sum(-1) > 1e-6).sum()) for c in (2, 4, 6)]
    assert 0 < reach[0] < reach[1] < reach[2]


def test_channel_attention(tmp_path):
    check_layer(ChannelAttention(reduction=4), (2, 4, 4, 16), (2, 4, 4, 16), tmp_path)


def test_channel_attention_weights_are_per_channel():
    layer = ChannelAttention(reduction=2)
    x = np.random.default_rng(1).normal(size=(2, 4, 4, 8)).astype("float32")
    ratio = keras.ops.convert_to_numpy(layer(x)) / x
    # one weight per (example, channel), shared by all positions, in (0, 1)
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:, :1, :1, :], ratio.shape), rtol=1e-4)
    assert np.all((ratio > 0) & (ratio < 1))


def test_spatial_attention(tmp_path):
    check_layer(SpatialAttention(kernel_size=3), (2, 6, 6, 4), (2, 6, 6, 4), tmp_path)


def test_spatial_attention_weights_are_per_position():
    layer = SpatialAttention(kernel_size=3)
    x = np.random.default_rng(2).normal(size=(1, 5, 5, 6)).astype("float32") + 3.0
    ratio = keras.ops.convert_to_numpy(layer(x)) / x
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[..., :1], ratio.shape), rtol=1e-4)


def test_dual_attention(tmp_path):
    check_layer(DualAttention(reduction=2, kernel_size=5), (2, 4, 4, 8), (2, 4, 4, 8), tmp_path)


def test_dual_attention_is_channel_then_spatial():
    layer = DualAttention(reduction=2, kernel_size=3)
    x = np.random.default_rng(3).normal(size=(2, 4, 4, 8)).astype("float32")
    output = keras.ops.convert_to_numpy(layer(x))
    expected = layer.spatial_attention(layer.channel_attention(x))
    np.testing.assert_allclose(output, keras.ops.convert_to_numpy(expected), atol=1e-6)


def test_fusion_head(tmp_path):
    check_layer(FusionHead(num_classes=5), [(2, 4, 4, 8), (2, 4, 4, 8)], (2, 5), tmp_path)


def test_fusion_head_parameters_for_two_resnet32_students():
    head = FusionHead(num_classes=100)
    head.build([(None, 8, 8, 64), (None, 8, 8, 64)])
    trainable = sum(int(np.prod(w.shape)) for w in head.trainable_weights)
    # depthwise 3*3*128 + BN 2*128 + pointwise 128*64 + BN 2*64 + dense 64*100+100
    assert trainable == 1152 + 256 + 8192 + 128 + 6500


@pytest.mark.parametrize(
    "make, shape, match",
    [
        (lambda: MultiScaleBlock(splits=3), (1, 4, 4, 16), "splits=3"),
        (lambda: MultiScaleBlock(splits=1), None, "splits must be"),
        (lambda: ChannelAttention(reduction=0), None, "reduction"),
        (lambda: SpatialAttention(kernel_size=4), None, "odd"),
        (lambda: FusionHead(num_classes=0), None, "num_classes"),
    ],
)
def test_bad_layer_arguments(make, shape, match):
    with pytest.raises(ValueError, match=match):
        layer = make()
        layer.build(shape)


def test_fusion_head_refuses_maps_of_different_sizes():
    with pytest.raises(ValueError, match="spatial size"):
        FusionHead(num_classes=3).build([(None, 8, 8, 4), (None, 4, 4, 4)])
