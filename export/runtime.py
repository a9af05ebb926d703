"""onnxruntime sessions set up for inference, and batched runs of them (no TensorFlow here)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

from mfef_keras._regular_files import check_regular

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def cpu_count() -> int:
    """Cores this process may use (the affinity mask, not the machine's total, as containers restrict it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        return os.cpu_count() or 1


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """Options for a low-latency inference session.

    Args:
        threads: intra-op threads; default one per usable core. One inter-op thread and
            sequential execution, as these graphs are a single chain of convolutions.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or cpu_count()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


def default_providers() -> list[str]:
    """CUDA then CPU when this onnxruntime build has CUDA, else CPU only."""
    return [CUDA, CPU] if CUDA in ort.get_available_providers() else [CPU]


def make_session(
    model: str | os.PathLike | bytes, providers: Sequence[str] | None = None, threads: int | None = None
) -> ort.InferenceSession:
    """An inference session on ``model`` (a path or serialised bytes).

    Args:
        model: ONNX file path or the serialised model.
        providers: execution providers in order of preference; default `default_providers()`.
        threads: intra-op threads (default: one per usable core).
    """
    # onnxruntime opens the path itself: a FIFO there would block it forever.
    source = str(check_regular(model, "loaded as an ONNX model")) if isinstance(model, (str, os.PathLike)) else model
    return ort.InferenceSession(source, session_options(threads), providers=list(providers or default_providers()))


def run_batched(session: ort.InferenceSession, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The session's first output on ``images``, run ``batch_size`` images at a time.

    Args:
        session: a session with one input.
        images: a non-empty batch whose dtype and shape the session's input accepts.
        batch_size: images per call.
    """
    input_name = session.get_inputs()[0].name
    output_name = session.get_outputs()[0].name
    chunks = [
        session.run([output_name], {input_name: images[start : start + batch_size]})[0]
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(chunks)


def onnx_logits(session: ort.InferenceSession, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits of an exported classifier (its first output) as float32; the export checks use this."""
    return run_batched(session, images, batch_size).astype(np.float32, copy=False)
