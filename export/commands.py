"""The ``mfef export``, ``mfef predict`` and ``mfef serve`` commands.

``predict`` imports only onnxruntime, numpy, pillow and click, so it also runs in the slim inference
image, as ``serve`` of an export folder does with the serve extra added; ``export`` (and ``serve`` of a run or
zoo name) imports TensorFlow when it runs, not when the CLI starts.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from mfef_keras._outputs import user_errors
from mfef_keras.export.errors import ExportError, PredictError
from mfef_keras.export.formats import ALL, FORMATS
from mfef_keras.export.metadata import DEFAULT_CALIBRATION_SAMPLES, DEFAULT_OPSET


@click.command("export")
@click.argument("source")
@click.option(
    "--format",
    "format_",
    type=click.Choice([*FORMATS, ALL]),
    default="onnx",
    show_default=True,
    help="Artefact(s) to write: "
    + ", ".join(f"{name} ({FORMATS.description(name)})" for name in FORMATS)
    + f" or {ALL}.",
)
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Directory to create."
)
@click.option("--opset", type=int, default=DEFAULT_OPSET, show_default=True, help="ONNX opset.")
@click.option(
    "--no-preprocess",
    is_flag=True,
    help="Export the bare network (normalised float32 input) instead of one taking raw uint8 images.",
)
@click.option("--quantize", type=click.Choice(["int8", "fp16"]), help="Also write a quantized ONNX model.")
@click.option(
    "--validate-on", metavar="DATASET", help="Report top-1 accuracy on this dataset's test split, Keras beside export."
)
@click.option("--student", type=int, metavar="K", help="Export student K of a run directory (default: its best).")
@click.option(
    "--model",
    type=click.Choice(["student", "fused"]),
    default="student",
    show_default=True,
    help="From a run directory: its deployed student (the compressed option), or its fused classifier, the whole "
    "cohort with the method's head in one graph (the accuracy option; runs of the methods mfef list-methods marks "
    "with a fused classifier).",
)
@click.option(
    "--calibration-samples",
    type=click.IntRange(min=1),
    default=DEFAULT_CALIBRATION_SAMPLES,
    show_default=True,
    help="Training images sampled to calibrate int8.",
)
@click.option(
    "--calibrate-synthetic",
    is_flag=True,
    help="Calibrate int8 on random images when no training data is available (ranges will not reflect real images).",
)
@click.option("--force", is_flag=True, help="Replace --out if it holds a previous export (never any other folder).")
def export_command(
    source: str,
    format_: str,
    out_dir: Path,
    opset: int,
    no_preprocess: bool,
    quantize: str | None,
    validate_on: str | None,
    student: int | None,
    model: str,
    calibration_samples: int,
    calibrate_synthetic: bool,
    force: bool,
) -> None:
    """Export SOURCE for deployment as ONNX and/or SavedModel, validated against the Keras student.

    SOURCE is a run directory, a student directory, a zoo preset name or a .keras file. By default
    the artefact takes raw uint8 NHWC images of the training size and normalises them itself.
    Nothing is written unless every artefact matches the Keras student (fp32 logits within 1e-4,
    same top-1 class).
    """
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from mfef_keras.export.exporter import export_student

    with user_errors(ExportError):
        if model == "fused":
            source = _fused_source(source, student)
        report = export_student(
            source,
            out_dir,
            format_,
            opset=opset,
            preprocess=not no_preprocess,
            quantize=quantize,
            validate_on=validate_on,
            student=student,
            calibration_samples=calibration_samples,
            calibrate_synthetic=calibrate_synthetic,
            overwrite=force,
        )
    click.echo(report.summary())


def _fused_source(source: str, student: int | None) -> str:
    """The fused classifier's student directory in run directory ``source``; ExportError naming what is missing."""
    from mfef_keras.distill.methods import fused_methods
    from mfef_keras.student_dir import is_student_dir
    from mfef_keras.training.run_students import FUSED_DIR

    if student is not None:
        raise ExportError("--model fused exports the whole cohort; --student K picks one student of it.")
    fused = Path(source) / FUSED_DIR
    if not is_student_dir(fused):
        raise ExportError(
            f"{source} has no fused classifier ({fused} with model.keras and metadata.json): --model fused takes a "
            f"run directory of a method with one ({', '.join(fused_methods())}), trained by this version of mfef."
        )
    return str(fused)


@click.command("predict")
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True, help="Classes shown per image.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True, help="Images per run.")
@click.option(
    "--no-resize",
    is_flag=True,
    help="Refuse an image whose size or channels differ from the model's input, instead of converting and "
    "resizing it (each change is noted on stderr).",
)
@click.option("--int8", is_flag=True, help="Run an export folder's int8 model. [default: its float32 model.onnx]")
def predict_command(
    model: Path, images: tuple[Path, ...], top_k: int, batch_size: int, no_resize: bool, int8: bool
) -> None:
    """Print the TOP-K classes of each image with their probabilities.

    MODEL is an .onnx file or a directory written by `mfef export` (its float32 model.onnx, or with
    --int8 its model.int8.onnx); stderr says which file runs. IMAGES are PNG/JPEG files, converted and
    resized to the model's input where they differ, or .npy batches of raw uint8 NHWC images.
    """
    from mfef_keras.export.images import load_images
    from mfef_keras.export.npy_files import check_npy_sizes
    from mfef_keras.export.predictor import Predictor

    with user_errors(PredictError):
        check_npy_sizes(images)
        predictor = Predictor(model, batch_size=batch_size, int8=int8)
        batch, names, notes = load_images(images, predictor.image_shape, resize=not no_resize)
        ranked = predictor.top_k(batch, top_k)
    click.echo(f"running {predictor.path} on {predictor.provider}", err=True)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    width = max(len(label) for classes in ranked for label, _ in classes)
    for name, classes in zip(names, ranked):
        click.echo(name)
        for rank, (label, probability) in enumerate(classes, start=1):
            click.echo(f"  {rank}. {label:<{width}}  {probability:.4f}")


@click.command("serve")
@click.argument("source")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every one).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="HTTP port.")
@click.option("--int8", is_flag=True, help="Serve an export folder's int8 model. [default: its float32 model.onnx]")
@click.option(
    "--max-batch", type=click.IntRange(min=1), default=32, show_default=True, help="Images per model run and request."
)
@click.option(
    "--max-latency-ms",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="How long a batch waits for more requests before it runs.",
)
@click.option(
    "--max-queued",
    type=click.IntRange(min=1),
    help="Images that may wait; requests beyond get 503. [default: 8 x --max-batch]",
)
@click.option(
    "--max-request-mb",
    type=click.FloatRange(min=0, min_open=True),
    help="Largest request body, in MiB; a larger one gets 413 before it is read (a chunked one once it passes the "
    "limit), so a client cannot make the server hold more. [default: the larger of 16 and 32 bytes per pixel value "
    "of --max-batch images]",
)
@click.option("--name", help="The model's name in the URLs (/v2/models/NAME). [default: the export folder's name]")
def serve_command(
    source: str,
    host: str,
    port: int,
    int8: bool,
    max_batch: int,
    max_latency_ms: float,
    max_queued: int | None,
    max_request_mb: float | None,
    name: str | None,
) -> None:
    """Serve SOURCE over HTTP with the Open Inference Protocol (KServe V2), until SIGTERM.

    SOURCE is a directory written by `mfef export` (served as it is, without TensorFlow), or a run directory,
    student directory or zoo preset name, exported first to a temporary folder. Requests send the model's own
    input (raw uint8 NHWC images, or normalised float32 for a --no-preprocess export) or PNG/JPEG files as a
    BYTES input named "images"; responses hold the logits and the top-1 class names ("labels"). Needs the
    `serve` extra (pip install 'mfef-keras[serve]').
    """
    from mfef_keras.model_files import ONNX_FILE

    options = dict(
        host=host,
        port=port,
        int8=int8,
        max_batch=max_batch,
        max_latency_ms=max_latency_ms,
        max_queued=max_queued,
        max_request_mb=max_request_mb,
    )
    with user_errors(PredictError, ExportError):
        path = Path(source)
        if (path / ONNX_FILE).is_file() or path.suffix == ".onnx":
            _serve(path, name=name, **options)
            return
        import tempfile

        with tempfile.TemporaryDirectory(prefix="mfef-serve-") as scratch:
            os.environ.setdefault("KERAS_BACKEND", "tensorflow")
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            from mfef_keras.export.exporter import export_student

            out = Path(scratch) / (path.name or "model")
            export_student(source, out, "onnx", quantize="int8" if int8 else None, calibrate_synthetic=int8)
            # Named after SOURCE, not the scratch folder.
            _serve(out, name=name or out.name, **options)


def _serve(path: Path, **options) -> None:
    """Run `inference_server.serve`; a missing serve extra is one line saying what to install."""
    try:
        from mfef_keras.export.inference_server import serve
    except ModuleNotFoundError as error:
        raise PredictError(
            f"mfef serve needs {error.name}, which the serve extra brings: pip install 'mfef-keras[serve]'."
        ) from None
    serve(path, **options)
