"""VGG with BatchNorm in its CIFAR form (the last stage keeps a 2x2 map for the fusion path)."""

from __future__ import annotations

from keras import layers

from mfef_keras.models.recipe import BackboneRecipe, LayerFactory

VGG_STAGES = {
    8: ((64,), (128,), (256,), (512,), (512,)),
    11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    13: ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
}


def vgg_cifar_recipe(depth: int, base_width: int = 64, make: LayerFactory = LayerFactory()) -> BackboneRecipe:
    """Recipe for VGG-``depth`` (8, 11, 13 or 16); ``base_width`` scales every stage's width by ``base_width / 64``."""
    if depth not in VGG_STAGES:
        raise ValueError(f"VGG depth must be one of {sorted(VGG_STAGES)}, got {depth}.")

    def conv_bn_relu(x, filters, name):
        x = make.conv(filters, 3, name=f"{name}_conv")(x)
        return layers.ReLU(name=f"{name}_relu")(make.bn(name=f"{name}_bn")(x))

    def stage(index, widths):
        def build(x, prefix):
            if index > 0:
                x = layers.MaxPooling2D(2, name=f"{prefix}stage{index + 1}_pool")(x)
            for c, width in enumerate(widths):
                x = conv_bn_relu(x, max(1, width * base_width // 64), f"{prefix}stage{index + 1}_{c + 1}")
            return x

        return build

    stages = tuple(stage(i, widths) for i, widths in enumerate(VGG_STAGES[depth]))
    return BackboneRecipe(stem=lambda x, prefix: x, stages=stages)
