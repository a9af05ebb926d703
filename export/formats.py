"""The export formats `mfef export --format` offers, registered once: the exporter and the CLI read them here.

Standard library only (the CLI builds ``--format``'s choices at start-up, before anything imports TensorFlow).
Each entry is the name of the artefact the format writes in the export folder.
"""

from __future__ import annotations

from mfef_keras.model_files import ONNX_FILE, SAVED_MODEL_DIR
from mfef_keras.registry import Registry

# The word that asks for every format at once.
ALL = "all"

FORMATS: Registry[str] = Registry("export format")
FORMATS.register("onnx", "ONNX, run by onnxruntime; --quantize adds an int8 or fp16 copy")(ONNX_FILE)
FORMATS.register("saved_model", "TensorFlow SavedModel, signature serving_default")(SAVED_MODEL_DIR)
