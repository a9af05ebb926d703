"""`evaluate_onnx`: the top-1 / top-k accuracy of an exported ONNX model on a dataset's test split (``mfef eval``).

The model runs in onnxruntime on the CPU, as the export's own checks do: the CPU kernels give the same logits on
every run, so the accuracy is the same number each time, and an int8 model is measured as it will be deployed.
No TensorFlow model is involved; the test images come from the package's dataset registry as raw uint8 pixels,
in the order `mfef eval` of a Keras student reads them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mfef_keras._outputs import check_output_dir
from mfef_keras._regular_files import read_regular
from mfef_keras.export.datasets import check_classes, check_images, load_split
from mfef_keras.export.errors import ExportError
from mfef_keras.export.metadata import EXPORT_FORMAT
from mfef_keras.model_files import METADATA_FILE
from mfef_keras.training.eval_results import scores, write_results


def is_onnx_model(source: str | os.PathLike) -> bool:
    """Whether ``source`` names an ONNX model: an ``.onnx`` file, or a directory written by ``mfef export``."""
    path = Path(source)
    if path.is_file():
        return path.suffix == ".onnx"
    try:
        return json.loads(read_regular(path / METADATA_FILE)).get("format") == EXPORT_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _default_out(model_file: Path) -> Path:
    # Beside the export, not in it: an export folder holds only what its metadata lists (see `mfef export --force`).
    # Named after the export folder too, since every export calls its models model.onnx / model.int8.onnx.
    return Path(f"{model_file.resolve().parent.name}-{model_file.stem}-eval")


def evaluate_onnx(
    source: str | os.PathLike,
    dataset: str | None = None,
    data_dir: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    batch_size: int = 100,
    normalize: bool = False,
) -> dict:
    """Measure an exported ONNX model on the test split of ``dataset``; write ``metrics.json`` and the matrix.

    Args:
        source: an ``.onnx`` file written by ``mfef export`` (fp32, int8 or fp16), or an export directory (its
            default model: the quantized one when the export made one).
        dataset: dataset whose test split to use (default: the one the model card names).
        data_dir: where datasets live.
        out_dir: where to write ``metrics.json`` and ``confusion_matrix.png`` (default:
            ``<export folder>-<model>-eval`` in the working directory).
        batch_size: images per onnxruntime call.
        normalize: draw the confusion matrix's rows as fractions of their true class.

    Returns:
        The figures of `scores`, with ``source``, ``model`` (the file run), ``runtime``, ``dataset`` and ``out_dir``.

    Raises:
        ExportError: no dataset is known, or its classes or image size are not the model's.
        PredictError: the file is not an ONNX model written by ``mfef export``.
    """
    import onnxruntime

    from mfef_keras.export.predictor import Predictor
    from mfef_keras.export.runtime import CPU

    predictor = Predictor(source, providers=[CPU], batch_size=batch_size)
    dataset = dataset or predictor.metadata.get("dataset")
    if not dataset:
        raise ExportError(f"{predictor.path} does not name the dataset it was trained on; pass --dataset.")
    out = check_output_dir(out_dir or _default_out(predictor.path), error=ExportError)
    # Labels index the class names: another dataset's labels would score the model on the wrong classes.
    check_classes(dataset, predictor.class_names, data_dir)
    images, labels = load_split(dataset, "test", data_dir=data_dir)
    images = check_images(images, predictor.image_shape, f"{dataset} test split")
    figures, matrix = scores(labels.reshape(-1), predictor.logits(images), predictor.class_names)
    results = {
        "source": str(source),
        "model": str(predictor.path),
        "runtime": f"onnxruntime {onnxruntime.__version__}, {predictor.provider}",
        "dataset": dataset,
        **figures,
    }
    title = f"{predictor.path.parent.name}/{predictor.path.name} on {dataset} test (onnxruntime)"
    write_results(out, results, matrix, predictor.class_names, title, normalize)
    return {**results, "out_dir": str(out)}
