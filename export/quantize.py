"""Smaller, faster ONNX students: int8 by onnxruntime static quantization, and float16."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.transformers.float16 import convert_float_to_float16

from mfef_keras.export.metadata import INPUT_NAME

INT8_SETTINGS = {
    "format": "QDQ",
    "weights": "int8, per channel",
    # uint8 activations with int8 weights (U8S8) run on x86's fast integer kernels; with int8 activations
    # onnxruntime 1.26 leaves half the convolutions in float behind Q/DQ pairs and is slower than fp32.
    "activations": "uint8, per tensor",
    "calibration_method": "MinMax",
}


class _ImageReader(CalibrationDataReader):
    """Feeds calibration images to the quantizer in batches."""

    def __init__(self, images: np.ndarray, batch_size: int):
        self._batches = iter([images[start : start + batch_size] for start in range(0, len(images), batch_size)])

    def get_next(self) -> dict | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def quantize_int8(fp32_path: str | os.PathLike, out_path: str | os.PathLike, calibration_images: np.ndarray) -> None:
    """Write the int8 QDQ form of an fp32 ONNX classifier, its activation ranges calibrated on images.

    Args:
        fp32_path: the fp32 model (input ``images``).
        out_path: where to write the quantized model.
        calibration_images: a sample of training images in the model's input dtype and shape.
    """
    with tempfile.TemporaryDirectory() as scratch:
        # onnxruntime's recommended pre-pass (shape inference and graph clean-up) before quantizing.
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out_path),
            _ImageReader(calibration_images, batch_size=32),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )


def convert_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The float16 form of an fp32 ONNX model whose input and output keep their types (uint8 or float32 in,
    float32 logits out). onnxruntime's own converter is used, so no extra package is needed.

    Args:
        model: the fp32 model (not modified).
    """
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # the converter edits the model it is given
    return convert_float_to_float16(copy, keep_io_types=True)
