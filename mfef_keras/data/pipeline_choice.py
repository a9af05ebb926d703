"""Which input pipeline feeds the students: tf.data where TensorFlow is installed, numpy batches elsewhere.

The choice follows what is installed, not the Keras backend: on a machine with TensorFlow every backend gets
the same tf.data batches, so a run resumed on another backend (a checkpoint crosses backends) sees exactly
the data an uninterrupted run would. Without TensorFlow (the ``jax`` extra) the numpy pipeline serves the
same augmentation with its own random draws: runs are deterministic per (seed, epoch) on either pipeline,
but the two pipelines draw different shuffles and crops. ``$MFEF_INPUT_PIPELINE`` overrides the choice, say
``numpy`` on a GPU machine where importing TensorFlow beside JAX would claim GPU memory.
"""

from __future__ import annotations

import os

from mfef_keras._tensorflow import tensorflow_installed, tensorflow_missing

PIPELINE_ENV = "MFEF_INPUT_PIPELINE"
TF_DATA = "tf.data"
NUMPY = "numpy"
PIPELINES = (TF_DATA, NUMPY)


def input_pipeline() -> str:
    """``"tf.data"`` or ``"numpy"``: ``$MFEF_INPUT_PIPELINE`` if set, else tf.data exactly when TensorFlow is installed.

    Raises:
        ValueError: ``$MFEF_INPUT_PIPELINE`` names no pipeline.
        TensorFlowMissing: it asks for tf.data and TensorFlow is not installed.
    """
    chosen = os.environ.get(PIPELINE_ENV, "").strip()
    if not chosen:
        return TF_DATA if tensorflow_installed() else NUMPY
    if chosen not in PIPELINES:
        raise ValueError(f"{PIPELINE_ENV}={chosen!r} names no input pipeline; use one of {', '.join(PIPELINES)}.")
    if chosen == TF_DATA and not tensorflow_installed():
        raise tensorflow_missing(f"{PIPELINE_ENV}={TF_DATA} asks for the tf.data pipeline", f"unset {PIPELINE_ENV}")
    return chosen
