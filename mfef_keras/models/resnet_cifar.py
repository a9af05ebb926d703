"""CIFAR ResNet (6n+2 layers, BasicBlock, widths w/2w/4w) as used by FFL, DML and ONE."""

from __future__ import annotations

from keras import layers

from mfef_keras.models.recipe import BackboneRecipe, LayerFactory


def _basic_block(x, filters: int, stride: int, make: LayerFactory, name: str):
    shortcut = x
    y = make.conv(filters, 3, stride, name=f"{name}_conv1")(x)
    y = layers.ReLU(name=f"{name}_relu1")(make.bn(name=f"{name}_bn1")(y))
    y = make.conv(filters, 3, name=f"{name}_conv2")(y)
    y = make.bn(name=f"{name}_bn2")(y)
    if stride != 1 or x.shape[-1] != filters:
        # Projection shortcut (1x1 conv + BN): this is what gives resnet32 its
        # 472,756 parameters on 100 classes in the reference code.
        shortcut = make.bn(name=f"{name}_down_bn")(make.conv(filters, 1, stride, name=f"{name}_down_conv")(x))
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([y, shortcut]))


def resnet_cifar_recipe(depth: int, base_width: int = 16, make: LayerFactory = LayerFactory()) -> BackboneRecipe:
    """Recipe for a CIFAR ResNet of ``depth = 6n + 2`` layers."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 20, 32, ...), got {depth}.")
    blocks = (depth - 2) // 6

    def stem(x, prefix):
        x = make.conv(base_width, 3, name=f"{prefix}stem_conv")(x)
        return layers.ReLU(name=f"{prefix}stem_relu")(make.bn(name=f"{prefix}stem_bn")(x))

    def stage(index):
        filters = base_width * 2**index

        def build(x, prefix):
            for b in range(blocks):
                stride = 2 if index > 0 and b == 0 else 1
                x = _basic_block(x, filters, stride, make, f"{prefix}stage{index + 1}_block{b + 1}")
            return x

        return build

    return BackboneRecipe(stem=stem, stages=tuple(stage(i) for i in range(3)))
