"""mfef_keras: online knowledge distillation with MFEF (Multi-scale Feature Extraction and Fusion) in Keras 3.

Importing the package does not choose a Keras backend: layers and models run on any
backend, and the `OnlineDistiller` trains on TensorFlow, JAX and torch. Export to ONNX and SavedModel
needs TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mfef_keras.preset_resolver import install_preset_resolver
from mfef_keras.training.tf_logs import tensorflow_logs_once

if TYPE_CHECKING:
    import keras

__version__ = "0.1.0"

# TensorFlow's start-up notices are written once each, not once per native library (nothing is imported here).
tensorflow_logs_once()


def _zoo_preset(source: str) -> Path:
    # The zoo is imported when a SOURCE first names a preset: `import mfef_keras` stays quick.
    from mfef_keras.zoo import resolve_preset

    return resolve_preset(source)


# This module composes the layers for the Python API as cli.py does for the commands: the core resolves
# SOURCE, the zoo knows presets, and only here do the two meet.
install_preset_resolver(_zoo_preset)


def from_preset(name: str, include_preprocessing: bool = False, offline: bool | None = None) -> keras.Model:
    """A published student as a plain Keras model, as keras-hub's ``from_preset`` gives one.

    The preset is pulled and verified first (`mfef_keras.zoo.load_student`); its model card (the preset's
    ``README.md``, and ``model.mfef_metadata``) states the preprocessing: images scaled to [0, 1], then
    normalised with the dataset's mean and std, which ``include_preprocessing=True`` builds in.

    Args:
        name: a zoo name (``mfef zoo list``), a preset folder or a preset archive path or URL.
        include_preprocessing: take raw uint8 images (0..255) and normalise them inside the model.
        offline: never use the network (default: ``$MFEF_ZOO_OFFLINE``).

    Returns:
        The model, images -> logits, with one input tensor; its metadata (classes, normalisation,
        training config, accuracy) as ``model.mfef_metadata``.

    Example:
        >>> model = from_preset("resnet8_mfef.digits_s0", include_preprocessing=True)  # doctest: +SKIP
        >>> model.input.shape, model.mfef_metadata["dataset"]["class_names"][:3]  # doctest: +SKIP
        ((None, 32, 32, 1), ['0', '1', '2'])
    """
    from mfef_keras.zoo import load_student

    return load_student(name, include_preprocessing=include_preprocessing, offline=offline)


def create_student(backbone: str, num_classes: int, input_shape: Sequence[int] = (32, 32, 3), **kwargs) -> keras.Model:
    """A new, untrained student network as a plain Keras model, as timm's ``create_model`` gives one.

    It uses Keras built-in layers only (`mfef_keras.models.to_plain_keras`), so it compiles, fits, saves and
    loads like any Keras model; `mfef_keras.models.get_backbone` gives the training form with the package's
    `BatchNorm`, and `mfef_keras.distill.OnlineDistiller` trains either.

    Args:
        backbone: a name from ``mfef list-backbones`` (``resnet8``, ``resnet32``, ``wrn16_2``, ``vgg11``...).
        num_classes: classes of the logits it outputs.
        input_shape: ``(height, width, channels)`` of its images.
        **kwargs: the backbone's own options, e.g. ``base_width``.

    Example:
        >>> student = create_student("resnet20", num_classes=10, input_shape=(28, 28, 1))  # doctest: +SKIP
        >>> student.output.shape  # doctest: +SKIP
        (None, 10)
    """
    from mfef_keras.models import get_backbone
    from mfef_keras.models.plain_keras import to_plain_keras

    return to_plain_keras(get_backbone(backbone, num_classes, input_shape=input_shape, **kwargs))
