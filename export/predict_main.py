"""``python -m mfef_keras.export.predict_main MODEL IMAGES...``: the inference image's entry point.

It needs only onnxruntime, numpy, pillow and click (no TensorFlow, no Keras).
"""

from __future__ import annotations

from mfef_keras.export.commands import predict_command


def main() -> None:
    """Run ``predict`` as a program of its own."""
    predict_command(prog_name="mfef-predict")


if __name__ == "__main__":
    main()
