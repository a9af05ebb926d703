"""The fusion path: per-student multi-scale block and attention, then the fusion head."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from mfef_keras.layers import ChannelAttention, DualAttention, FusionHead, MultiScaleBlock, SpatialAttention
from mfef_keras.layers.batch_norm import BatchNorm


def build_fusion_module(
    feature_shapes: Sequence[Sequence[int | None]],
    num_classes: int,
    multi_scale: bool = True,
    channel_attention: bool = True,
    spatial_attention: bool = True,
    splits: int = 4,
    reduction: int = 8,
    kernel_size: int = 7,
    sync_batchnorm: bool = False,
    name: str = "fusion",
) -> keras.Model:
    """A functional model from the students' feature maps to fused logits.

    Each student's map goes through its own `MultiScaleBlock` and attention (separate
    weights per student) before the shared `FusionHead`. Switching every component
    off gives FFL's plain fusion module.

    Students of a mixed cohort may end in maps of different widths (a WRN beside a ResNet). FFL and MFEF
    fuse maps of one width, concatenated so that each student gives the head as many channels; a narrower
    map is first projected to the widest one by a 1x1 convolution, BatchNorm and ReLU of its own (the
    pointwise form of the fusion head itself), so that every student weighs alike in the fusion. Maps of one
    width pass unchanged, as in the papers. Maps must share their spatial size: the head concatenates them.

    Args:
        feature_shapes: the shape of each student's feature map, batch first.
        num_classes: number of fused logits.
        multi_scale: use the multi-scale block.
        channel_attention: use channel attention.
        spatial_attention: use spatial attention.
        splits: channel groups of the multi-scale block.
        reduction: channel-attention reduction ratio.
        kernel_size: spatial-attention kernel size.
        sync_batchnorm: synchronise BatchNorm statistics across replicas.
        name: model name.
    """
    _check_spatial_sizes(feature_shapes)
    inputs = [keras.Input(tuple(shape[1:]), name=f"s{i}_feature_map") for i, shape in enumerate(feature_shapes)]
    width = max(int(shape[-1]) for shape in feature_shapes)
    processed = []
    for i, x in enumerate(inputs):
        if int(x.shape[-1]) != width:
            x = layers.Conv2D(width, 1, use_bias=False, name=f"s{i}_projection")(x)
            x = BatchNorm(synchronized=sync_batchnorm, name=f"s{i}_projection_bn")(x)
            x = layers.ReLU(name=f"s{i}_projection_relu")(x)
        if multi_scale:
            x = MultiScaleBlock(splits=splits, sync_batchnorm=sync_batchnorm, name=f"s{i}_multi_scale")(x)
        if channel_attention and spatial_attention:
            x = DualAttention(reduction=reduction, kernel_size=kernel_size, name=f"s{i}_dual_attention")(x)
        elif channel_attention:
            x = ChannelAttention(reduction=reduction, name=f"s{i}_channel_attention")(x)
        elif spatial_attention:
            x = SpatialAttention(kernel_size=kernel_size, name=f"s{i}_spatial_attention")(x)
        processed.append(x)
    logits = FusionHead(num_classes, sync_batchnorm=sync_batchnorm, name="fusion_head")(processed)
    return keras.Model(inputs, logits, name=name)


def _check_spatial_sizes(feature_shapes: Sequence[Sequence[int | None]]) -> None:
    """Refuse a cohort whose maps cannot be concatenated, naming the students and their shapes."""
    first = tuple(feature_shapes[0][1:])
    for i, shape in enumerate(feature_shapes[1:], 1):
        if tuple(shape[1:3]) != first[:2]:
            raise ValueError(
                f"The fusion head concatenates the students' last-stage maps, which must share their spatial size: "
                f"student s0 ends in maps of shape {first}, student s{i} in {tuple(shape[1:])} (height, width, "
                "channels). Choose backbones that downsample alike (resnet* and wrn* end at 1/4 of the input, "
                "vgg* at 1/16 of it)."
            )
