"""`load_student`: a published student as a `keras.Model`, its metadata attached, preprocessing optional."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from mfef_keras.zoo.resolve import resolve_preset

if TYPE_CHECKING:
    import keras

    from mfef_keras.data.info import DatasetInfo

# Keras (and mfef_keras.data, which needs numpy) are imported inside the functions: importing
# `mfef_keras.zoo` needs only the standard library and stays quick for `mfef zoo list/pull`.


def with_preprocessing(model: keras.Model, info: DatasetInfo) -> keras.Model:
    """Wrap ``model`` so it takes raw uint8 images and normalises them as it was trained to expect.

    Args:
        model: a student taking normalised float images.
        info: its training data's description (the card's ``dataset``): the image shape, mean and std.
    """
    import keras

    from mfef_keras.layers.image_normalization import ImageNormalization

    images = keras.Input(shape=info.image_shape, dtype="uint8", name="raw_images")
    normalised = ImageNormalization(info.mean, info.std, name="normalization")(images)
    return keras.Model(images, model(normalised), name=f"{model.name}_raw_input")


def load_student(
    source: str | os.PathLike,
    include_preprocessing: bool = False,
    offline: bool | None = None,
    allow_unverified: bool = False,
) -> keras.Model:
    """Load a published student (pulling and verifying it first); no code from the files is run.

    Args:
        source: a zoo name such as ``"resnet8_mfef.digits_s0"``, a preset folder, a
            ``.tar.gz`` path, or a ``file://``, ``https://`` or ``http://`` archive URL.
        include_preprocessing: return a model taking raw uint8 images (0..255) that
            starts with `ImageNormalization`; otherwise the model takes images already
            normalised as ``(x / 255 - mean) / std``.
        offline: never use the network (default: ``$MFEF_ZOO_OFFLINE``).
        allow_unverified: accept a remote archive without a pinned sha256.

    Returns:
        The model (images -> logits), with the preset's metadata (dataset, class names,
        normalisation, training config, metrics, license) as ``model.mfef_card`` (a `StudentCard`) and as
        ``model.mfef_metadata`` (its dict).

    Example:
        >>> model = load_student("resnet8_mfef.digits_s0", include_preprocessing=True)  # doctest: +SKIP
        >>> model.mfef_metadata["dataset"]["class_names"]  # doctest: +SKIP
    """
    from mfef_keras.models.plain_keras import single_input
    from mfef_keras.student_dir import load_student_dir

    path = resolve_preset(source, offline=offline, allow_unverified=allow_unverified)
    # Presets saved before students were given one input tensor hold a list of one.
    model, card = load_student_dir(path)
    model = single_input(model)
    if include_preprocessing:
        model = with_preprocessing(model, card.dataset)
    # Set past Keras's attribute tracking: the card is a plain record, not model state.
    object.__setattr__(model, "mfef_card", card)
    object.__setattr__(model, "mfef_metadata", card.to_dict())
    return model
