"""Export of trained students for deployment (mfef_keras.export).

`export_student` writes ONNX and/or SavedModel artefacts with their preprocessing, metadata and
validated parity; `Predictor` runs an exported ONNX model with onnxruntime alone. Names are
imported on first use so that the inference path (`Predictor`, ``mfef predict``) never imports
TensorFlow or Keras: the deployment image holds only onnxruntime, numpy, pillow and click.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "ExportError": "mfef_keras.export.errors",
    "ParityError": "mfef_keras.export.errors",
    "PredictError": "mfef_keras.export.errors",
    "ExportReport": "mfef_keras.export.exporter",
    "export_student": "mfef_keras.export.exporter",
    "ParityResult": "mfef_keras.export.parity",
    "Predictor": "mfef_keras.export.predictor",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
