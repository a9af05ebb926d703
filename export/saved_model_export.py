"""Keras -> TensorFlow SavedModel with a ``serving_default`` signature, and the reload that validates it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mfef_keras import student_card
from mfef_keras.export.errors import ExportError
from mfef_keras.export.metadata import INPUT_NAME, OUTPUT_NAME
from mfef_keras.student_card import StudentCard

SIGNATURE = "serving_default"
CARD_ASSET = "assets.extra/student_card.json"


def write_saved_model(
    model: keras.Model, path: str | os.PathLike, spec: tf.TensorSpec, card: StudentCard | None = None
) -> None:
    """Save ``model`` as a SavedModel whose ``serving_default`` maps ``images`` to ``{"logits": ...}``.

    Args:
        model: a Keras model with one input and one output.
        path: directory to create.
        spec: the input's signature (see `serving_model.input_spec`).
        card: the student's card, written to ``assets.extra/student_card.json`` (the SavedModel folder for
            files that travel with the model but that the graph does not load).
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name=SIGNATURE,
        fn=lambda images: {OUTPUT_NAME: model(images, training=False)},
        input_signature=[spec],
    )
    archive.write_out(str(path), verbose=False)
    if card is not None:
        (Path(path) / CARD_ASSET).parent.mkdir()
        student_card.write(Path(path) / CARD_ASSET, card)


def load_saved_model(path: str | os.PathLike, batch_size: int = 256) -> Callable[[np.ndarray], np.ndarray]:
    """A function ``images -> logits`` (numpy, float32) running the reloaded SavedModel's serving signature.

    Args:
        path: the SavedModel directory.
        batch_size: images per call.
    """
    try:
        loaded = tf.saved_model.load(str(path))
        loaded.signatures[SIGNATURE]
    except (OSError, KeyError, ValueError) as error:
        raise ExportError(f"Cannot reload the SavedModel at {path}: {error}") from error

    def logits(images: np.ndarray) -> np.ndarray:
        # Looked up through ``loaded`` so that the object owning the signature's variables stays alive.
        serve = loaded.signatures[SIGNATURE]
        chunks = [
            serve(**{INPUT_NAME: tf.constant(images[start : start + batch_size])})[OUTPUT_NAME].numpy()
            for start in range(0, len(images), batch_size)
        ]
        return np.concatenate(chunks).astype(np.float32, copy=False)

    return logits
