"""The fusion path: per-student multi-scale block and attention, then the fusion head."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from mfef_keras.layers import ChannelAttention, DualAttention, FusionHead, MultiScaleBlock, SpatialAttention


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
    inputs = [keras.Input(tuple(shape[1:]), name=f"s{i}_feature_map") for i, shape in enumerate(feature_shapes)]
    processed = []
    for i, x in enumerate(inputs):
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
