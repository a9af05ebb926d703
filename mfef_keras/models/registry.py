"""Registry of student backbones: names, builders and assembly into keras.Models."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
from keras import layers

from mfef_keras._names import unknown_name_error
from mfef_keras.choices import BACKBONES, TOPOLOGIES, cohort_names
from mfef_keras.models.recipe import BackboneRecipe, LayerFactory

FEATURES = "features"
LOGITS = "logits"


def register_backbone(
    name: str, description: str
) -> Callable[[Callable[..., BackboneRecipe]], Callable[..., BackboneRecipe]]:
    """Decorator registering a recipe builder ``f(make=LayerFactory, **kwargs) -> BackboneRecipe`` under ``name``.

    Args:
        name: the backbone's name (``--backbone``, `get_backbone`).
        description: the backbone in one line.
    """
    return BACKBONES.register(name, description)


def list_backbones(pattern: str = "*") -> list[str]:
    """Names of the registered backbones matching a shell-style ``pattern`` (e.g. ``"resnet*"``), in natural order.

    Args:
        pattern: shell wildcards; resnet8 comes before resnet20, wrn16_2 before wrn16_8.
    """
    return BACKBONES.list(pattern)


def _recipe(name: str, sync_batchnorm: bool, **kwargs) -> BackboneRecipe:
    builder = BACKBONES.get(name)
    try:
        return builder(make=LayerFactory(sync_batchnorm=sync_batchnorm), **kwargs)
    except TypeError as error:
        raise ValueError(f"Bad options {kwargs} for backbone {name!r}: {error}") from None


def _head(x, num_classes: int, prefix: str):
    features = layers.Identity(name=f"{prefix}{FEATURES}")(x)
    pooled = layers.GlobalAveragePooling2D(name=f"{prefix}pool")(features)
    # Logits stay float32 under mixed precision so softmax and the KD losses are stable.
    return features, layers.Dense(num_classes, dtype="float32", name=f"{prefix}{LOGITS}")(pooled)


def build_students(
    name: str | Sequence[str],
    num_classes: int,
    num_students: int | None = None,
    topology: str = "independent",
    input_shape: Sequence[int] = (32, 32, 3),
    sync_batchnorm: bool = False,
    **kwargs,
) -> list[keras.Model]:
    """Build a cohort of students on one input tensor: ``num_students`` of backbone ``name``, or one per name.

    With ``topology="independent"`` every student has its own weights; with
    ``"shared_trunk"`` the stem and all stages but the last are shared (the FFL / ONE
    form) and each student owns its last stage and classifier. Each student maps
    images to logits and names its last-stage map ``s{i}_features``.

    Args:
        name: a registered backbone (see `list_backbones`) for every student, or one name per student (a
            mixed cohort, e.g. ``["resnet32", "resnet8"]``).
        num_classes: number of logits.
        num_students: how many students (>= 1) of a single ``name`` (default 2); with a list, None or its length.
        topology: ``"independent"`` or ``"shared_trunk"`` (students of one backbone only).
        input_shape: image shape (height, width, channels).
        sync_batchnorm: synchronise BatchNorm statistics across replicas under
            `tf.distribute`, so multi-device training matches one device.
        **kwargs: family options such as ``base_width`` or ``dropout``, for every student.

    Example:
        >>> large, small = build_students(["resnet32", "resnet8"], num_classes=10)
        >>> large.count_params() > small.count_params()
        True
    """
    if topology not in TOPOLOGIES:
        raise unknown_name_error("topology", topology, TOPOLOGIES)
    names = cohort_names(name, num_students)
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
    if topology == "shared_trunk" and len(set(names)) > 1:
        raise ValueError(
            f"topology 'shared_trunk' shares one backbone's trunk; the cohort {','.join(names)} mixes backbones. "
            "Use --topology independent for a mixed cohort."
        )
    recipes = {backbone: _recipe(backbone, sync_batchnorm, **kwargs) for backbone in dict.fromkeys(names)}
    images = keras.Input(tuple(input_shape), name="images")
    if topology == "shared_trunk":
        recipe = recipes[names[0]]
        trunk = recipe.stem(images, "trunk_")
        for stage in recipe.stages[:-1]:
            trunk = stage(trunk, "trunk_")
    students = []
    for i, backbone in enumerate(names):
        prefix = f"s{i}_"
        recipe = recipes[backbone]
        if topology == "shared_trunk":
            x = recipe.stages[-1](trunk, prefix)
        else:
            x = recipe.stem(images, prefix)
            for stage in recipe.stages:
                x = stage(x, prefix)
        _, logits = _head(x, int(num_classes), prefix)
        students.append(keras.Model(images, logits, name=f"{backbone}_s{i}"))
    return students


def get_backbone(
    name: str,
    num_classes: int,
    input_shape: Sequence[int] = (32, 32, 3),
    sync_batchnorm: bool = False,
    **kwargs,
) -> keras.Model:
    """One student of backbone ``name``: a functional `keras.Model` from images to logits.

    Its last-stage feature map is the output of the layer found by `feature_layer`.

    Example:
        >>> model = get_backbone("resnet32", num_classes=100)
        >>> model.output.shape
        (None, 100)
    """
    recipe = _recipe(name, sync_batchnorm, **kwargs)
    images = keras.Input(tuple(input_shape), name="images")
    x = recipe.stem(images, "")
    for stage in recipe.stages:
        x = stage(x, "")
    _, logits = _head(x, int(num_classes), "")
    return keras.Model(images, logits, name=name)


def feature_layer(model: keras.Model) -> layers.Layer:
    """The layer whose output is ``model``'s last-stage feature map (named ``features`` or ``*_features``)."""
    found = [layer for layer in model.layers if layer.name == FEATURES or layer.name.endswith(f"_{FEATURES}")]
    if len(found) != 1:
        raise ValueError(
            f"Model {model.name!r} must have exactly one layer named '{FEATURES}' or '*_{FEATURES}' marking its "
            f"last-stage feature map; found {[layer.name for layer in found]}. Build students with get_backbone()."
        )
    return found[0]
