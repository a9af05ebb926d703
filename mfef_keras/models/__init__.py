"""Student backbones for 32x32 images: CIFAR ResNet, Wide ResNet and VGG, in both topologies."""

from mfef_keras.models.plain_keras import to_plain_keras
from mfef_keras.models.registry import (
    TOPOLOGIES,
    build_students,
    feature_layer,
    get_backbone,
    list_backbones,
    register_backbone,
)

__all__ = [
    "TOPOLOGIES",
    "build_students",
    "feature_layer",
    "get_backbone",
    "list_backbones",
    "register_backbone",
    "to_plain_keras",
]
