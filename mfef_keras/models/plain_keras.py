"""`to_plain_keras`: a trained student as a network of Keras built-in layers only.

The package's training-only layers (the fused-kernel `BatchNorm`) make a saved student
need ``mfef_keras`` to load. A standalone student is cloned with their Keras built-in
equivalents instead, so ``keras.saving.load_model`` reads it anywhere, on any backend.
"""

from __future__ import annotations

import keras

from mfef_keras.layers.batch_norm import BatchNorm

# Package layers whose config and weights are those of a Keras built-in and whose outputs
# are the same (they differ only in how fast they train).
_BUILTIN_EQUIVALENTS: dict[type[keras.layers.Layer], type[keras.layers.Layer]] = {
    BatchNorm: keras.layers.BatchNormalization,
}


def _plain_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    config = layer.get_config()
    if isinstance(layer, keras.layers.BatchNormalization):
        # Cross-replica statistics only matter in training, and synchronized=True does not load off TensorFlow.
        config["synchronized"] = False
    builtin = _BUILTIN_EQUIVALENTS.get(type(layer), type(layer))
    if builtin.__module__.startswith("mfef_keras"):
        raise ValueError(
            f"Layer {layer.name!r} ({builtin.__name__}) has no Keras built-in equivalent, so a model "
            "that uses it cannot be made a plain Keras network."
        )
    return builtin.from_config(config)


def to_plain_keras(model: keras.Model) -> keras.Model:
    """A copy of ``model`` built from Keras built-in layers only, with the same weights and outputs.

    Every layer is re-created from its config (names kept); the package's `BatchNorm` becomes
    `keras.layers.BatchNormalization` and no BatchNormalization stays ``synchronized``. The
    copy holds a snapshot of the weights (BatchNorm moving statistics included), not shared ones.

    Args:
        model: a Functional or Sequential model (nested models are converted too).

    Returns:
        The plain copy, which ``keras.saving.load_model`` loads without ``mfef_keras``.

    Raises:
        ValueError: ``model`` holds a package layer that has no built-in equivalent.

    Example:
        >>> from mfef_keras.models import get_backbone
        >>> student = to_plain_keras(get_backbone("resnet8", 10, input_shape=(32, 32, 1), base_width=4))
        >>> any(type(layer).__module__.startswith("mfef_keras") for layer in student.layers)
        False
    """
    plain = keras.models.clone_model(model, clone_function=_plain_layer, recursive=True)
    for source, target in zip(model.weights, plain.weights, strict=True):
        if source.path != target.path or tuple(source.shape) != tuple(target.shape):
            raise AssertionError(f"Cloning reordered the weights: {source.path} became {target.path}.")
        target.assign(source.value)
    return single_input(plain)


def single_input(model: keras.Model) -> keras.Model:
    """``model`` with its one input as a tensor, not a list of one, as keras.applications models have it.

    `keras.models.clone_model` gives a functional model a list of inputs, so a saved student's ``model.input``
    was ``[images]``. The same layers (and so the same weights) are wrapped again around the one tensor.

    Args:
        model: a model with one input; one with several is returned as it is.

    Example:
        >>> from mfef_keras.models import get_backbone
        >>> clone = keras.models.clone_model(get_backbone("resnet8", 10, input_shape=(32, 32, 1), base_width=4))
        >>> single_input(clone).input.shape
        (None, 32, 32, 1)
    """
    if isinstance(model.input, list) and len(model.inputs) == 1:
        return keras.Model(model.inputs[0], model.output, name=model.name)
    return model
