"""mfef_keras: online knowledge distillation with MFEF (Multi-scale Feature Extraction and Fusion) in Keras 3.

Importing the package does not choose a Keras backend: layers and models run on any
backend, and the `OnlineDistiller` trains on TensorFlow, JAX and torch. Export to ONNX and SavedModel
needs TensorFlow.
"""

__version__ = "0.1.0"
