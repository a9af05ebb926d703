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

    def conv(self, filters: int, kernel: int, stride: int = 1, name: str | None = None) -> layers.Conv2D:
        # PyTorch's kaiming_normal_(mode="fan_out") of the reference ResNets. A fresh
        # initializer per layer draws its seed after keras.utils.set_random_seed, so a
        # seeded build gives the same weights in every process.
        init = keras.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="untruncated_normal")
        return layers.Conv2D(
            filters, kernel, strides=stride, padding="same", use_bias=False, kernel_initializer=init, name=name
        )

    def bn(self, name: str | None = None) -> BatchNorm:
        return BatchNorm(synchronized=self.sync_batchnorm, name=name)
