"""Keras -> ONNX through tf2onnx, with an explicit opset, a dynamic batch and fixed tensor names."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import keras
import onnx
import onnxruntime as ort
import tensorflow as tf
import tf2onnx
from onnx import helper

from mfef_keras import __version__
from mfef_keras.export.errors import ExportError
from mfef_keras.export.metadata import INPUT_NAME, OUTPUT_NAME

# Opset 13 is the first with per-axis QuantizeLinear, which the int8 export (per-channel QDQ) needs.
MIN_OPSET = 13
BATCH_DIM = "batch"


def tf2onnx_max_opset() -> int:
    """The highest opset this tf2onnx converts to."""
    return max(tf2onnx.constants.OPSET_TO_IR_VERSION)


def ort_runs_opset(opset: int) -> bool:
    """Whether the installed onnxruntime loads a model of this opset (it has no API that says so)."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "opset_probe",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    opsets = [helper.make_opsetid("", opset)]
    try:
        # find_min_ir_version_for raises for an opset the onnx package does not know either.
        model = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:
        return False
    return True


def check_opset(opset: int) -> None:
    """Raise `ExportError` unless both tf2onnx and onnxruntime handle ``opset``."""
    converter_max = tf2onnx_max_opset()
    if not MIN_OPSET <= opset <= converter_max:
        raise ExportError(
            f"Opset {opset} is not supported: tf2onnx {tf2onnx.__version__} converts up to opset {converter_max}, "
            f"and the int8 export needs at least {MIN_OPSET}; choose an opset in {MIN_OPSET}..{converter_max}."
        )
    if not ort_runs_opset(opset):
        runnable = [k for k in range(MIN_OPSET, opset) if ort_runs_opset(k)]
        choice = f"choose an opset in {MIN_OPSET}..{runnable[-1]}" if runnable else "upgrade onnxruntime"
        raise ExportError(f"Opset {opset} is not supported: onnxruntime {ort.__version__} cannot run it; {choice}.")


def convert(model: keras.Model, spec: tf.TensorSpec, opset: int) -> onnx.ModelProto:
    """The ONNX form of ``model`` with input ``images`` (batch dimension free) and output ``logits``.

    Args:
        model: a Keras model with one input and one output.
        spec: the input's signature (see `serving_model.input_spec`); Keras 3 models need one for tf2onnx.
        opset: ONNX opset to convert to (see `check_opset`).
    """

    @tf.function(input_signature=[spec])
    def serve(images):
        return {OUTPUT_NAME: model(images, training=False)}

    with warnings.catch_warnings():
        # tf2onnx 1.17 uses numpy aliases that numpy 2 deprecates (spec §7, pitfall 5).
        warnings.simplefilter("ignore", FutureWarning)
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=[spec], opset=opset)
    graph = proto.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ExportError(
            f"The converted graph has {len(graph.input)} inputs and {len(graph.output)} outputs; want 1 and 1."
        )
    _rename(graph, graph.input[0].name, INPUT_NAME)
    _rename(graph, graph.output[0].name, OUTPUT_NAME)
    for value in (graph.input[0], graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = BATCH_DIM
    proto.producer_name = "mfef_keras"
    proto.producer_version = __version__
    return proto


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename a graph input or output everywhere it appears (tf2onnx may keep TensorFlow's names)."""
    if old == new:
        return
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.name == old:
            value.name = new
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]


def finalize(proto: onnx.ModelProto, props: Mapping[str, str], doc: str) -> onnx.ModelProto:
    """Attach the metadata ``props`` and ``doc``, then run the ONNX checker on the result.

    Args:
        proto: the model (changed in place and returned).
        props: ``metadata_props`` entries (replacing any there).
        doc: a one-line description for the model's ``doc_string``.
    """
    helper.set_model_props(proto, dict(props))
    proto.doc_string = doc
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as error:
        raise ExportError(f"The ONNX checker rejects the exported model: {error}") from None
    return proto
