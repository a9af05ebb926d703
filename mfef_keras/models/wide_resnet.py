"""Wide ResNet WRN-d-k for CIFAR (pre-activation wide basic blocks, widths 16/16k/32k/64k)."""

from __future__ import annotations

from keras import layers

from mfef_keras.models.recipe import BackboneRecipe, LayerFactory


def _wide_block(x, filters: int, stride: int, dropout: float, make: LayerFactory, name: str):
    pre = layers.ReLU(name=f"{name}_relu1")(make.bn(name=f"{name}_bn1")(x))
    y = make.conv(filters, 3, stride, name=f"{name}_conv1")(pre)
    y = layers.ReLU(name=f"{name}_relu2")(make.bn(name=f"{name}_bn2")(y))
    if dropout:
        y = layers.Dropout(dropout, name=f"{name}_dropout")(y)
    y = make.conv(filters, 3, name=f"{name}_conv2")(y)
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = make.conv(filters, 1, stride, name=f"{name}_down_conv")(pre)
    return layers.Add(name=f"{name}_add")([y, shortcut])


def wide_resnet_recipe(
    depth: int, widen: int, base_width: int = 16, dropout: float = 0.0, make: LayerFactory = LayerFactory()
) -> BackboneRecipe:
    """Recipe for WRN-``depth``-``widen`` (``depth = 6n + 4``)."""
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"Wide ResNet depth must be 6n+4 with n >= 1 (10, 16, 28, 40, ...), got {depth}.")
    if widen < 1:
        raise ValueError(f"Wide ResNet widen factor must be >= 1, got {widen}.")
    blocks = (depth - 4) // 6

    def stem(x, prefix):
        return make.conv(base_width, 3, name=f"{prefix}stem_conv")(x)

    def stage(index):
        filters = base_width * widen * 2**index
        last = index == 2

        def build(x, prefix):
            for b in range(blocks):
                stride = 2 if index > 0 and b == 0 else 1
                x = _wide_block(x, filters, stride, dropout, make, f"{prefix}stage{index + 1}_block{b + 1}")
            if last:
                x = layers.ReLU(name=f"{prefix}final_relu")(make.bn(name=f"{prefix}final_bn")(x))
            return x

        return build

    return BackboneRecipe(stem=stem, stages=tuple(stage(i) for i in range(3)))
