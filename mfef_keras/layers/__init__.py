"""Keras layers for the MFEF blocks (backend-agnostic: `keras.ops` only)."""

from mfef_keras.layers.attention import ChannelAttention, DualAttention, SpatialAttention
from mfef_keras.layers.batch_norm import BatchNorm
from mfef_keras.layers.fusion_head import FusionHead
from mfef_keras.layers.image_normalization import ImageNormalization
from mfef_keras.layers.multi_scale_block import MultiScaleBlock

__all__ = [
    "BatchNorm",
    "ChannelAttention",
    "DualAttention",
    "FusionHead",
    "ImageNormalization",
    "MultiScaleBlock",
    "SpatialAttention",
]
