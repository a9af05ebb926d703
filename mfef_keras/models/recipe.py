"""A backbone described as a stem and a list of stages, so it can be assembled whole or with a shared trunk."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
from keras import layers

from mfef_keras.layers.batch_norm import BatchNorm

# A stage builder takes the incoming tensor and a name prefix, creates fresh layers and
# returns the outgoing tensor. Calling it twice gives two stages with separate weights.
StageBuilder = Callable[[keras.KerasTensor, str], keras.KerasTensor]


@dataclass(frozen=True)
class BackboneRecipe:
    """How to build one family member: stem, stages (the last one is the per-student part of a shared trunk)."""

    stem: StageBuilder
    stages: tuple[StageBuilder, ...]


@dataclass(frozen=True)
class LayerFactory:
    """Creates the conv / BN layers of a backbone with the package's settings."""

    sync_batchnorm: bool = False

    def conv(self, filters: int, kernel: int, stride: int = 1, name: str | None = None) -> Callable:
        """A bias-free convolution padded by ``kernel // 2`` on every side, as PyTorch's ``padding=k//2``.

        Keras's ``"same"`` with stride 2 pads 0 top/left and 1 bottom/right on TensorFlow, which
        samples other pixels than the reference ResNets and shifts the convolution off its 1x1
        shortcut; strided convolutions therefore pad explicitly and convolve ``"valid"``.
        """
        # PyTorch's kaiming_normal_(mode="fan_out") of the reference ResNets. A fresh
        # initializer per layer draws its seed after keras.utils.set_random_seed, so a
        # seeded build gives the same weights in every process.
        init = keras.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="untruncated_normal")
        strided = stride > 1 and kernel > 1
        conv = layers.Conv2D(
            filters,
            kernel,
            strides=stride,
            padding="valid" if strided else "same",
            use_bias=False,
            kernel_initializer=init,
            name=name,
        )
        if not strided:
            return conv
        pad = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad" if name else None)
        return lambda x: conv(pad(x))

    def bn(self, name: str | None = None) -> BatchNorm:
        return BatchNorm(synchronized=self.sync_batchnorm, name=name)
