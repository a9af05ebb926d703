"""The names of the files that hold a trained model, wherever it is kept.

A student directory, a zoo preset and an export folder all hold ``model.keras`` or the exported graphs beside a
``metadata.json``; readers and writers of each take the names from here, so the three cannot drift apart.
"""

# The Keras student, in a student directory, a zoo preset, or beside a bare run's best student.
MODEL_FILE = "model.keras"
# What travels with it: the dataset (classes, input shape, normalisation), training config, figures.
METADATA_FILE = "metadata.json"
# The artefacts of `mfef export`.
ONNX_FILE = "model.onnx"
QUANTIZED_FILES = {"int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}
SAVED_MODEL_DIR = "saved_model"
