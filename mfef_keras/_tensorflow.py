"""Whether TensorFlow is installed, and the error for what needs it where it is not.

TensorFlow is optional: the ``jax`` extra trains without it. Looking it up must not import it, since an import
takes seconds and, on a GPU machine, claims the GPUs' memory before JAX can.
"""

from __future__ import annotations

import importlib.util
import sys

# The extras of pyproject.toml that install TensorFlow.
TENSORFLOW_EXTRAS = "pip install 'mfef-keras[cpu]' (or [gpu])"


class TensorFlowMissing(RuntimeError):
    """Something that needs TensorFlow was asked for, and TensorFlow is not installed."""


def tensorflow_installed() -> bool:
    """Whether ``import tensorflow`` would find the package; it is looked up, not imported.

    A ``sys.modules["tensorflow"] = None`` entry (how tests hide an installed TensorFlow) counts as absent.
    """
    return importlib.util.find_spec("tensorflow") is not None


def tensorflow_missing(what: str, instead: str) -> TensorFlowMissing:
    """The error for ``what`` needing TensorFlow where it is not installed.

    Args:
        what: what was asked for, as the start of a sentence (``"Dataset 'cifar10' is read through ..."``).
        instead: what works without TensorFlow, as the end of a sentence.
    """
    return TensorFlowMissing(
        f"{what}, and TensorFlow is not installed in this environment ({sys.prefix}). Install it with "
        f"{TENSORFLOW_EXTRAS}, or {instead}."
    )
