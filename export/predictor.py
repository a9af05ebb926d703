"""`Predictor`: an exported student run by onnxruntime alone (no TensorFlow, no Keras)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mfef_keras.export.errors import PredictError
from mfef_keras.export.metadata import card_from_props
from mfef_keras.export.runtime import CUDA, default_providers, make_session, run_batched
from mfef_keras.model_files import ONNX_FILE, QUANTIZED_FILES
from mfef_keras.normalization import normalize


class Predictor:
    """Class probabilities from an ONNX model written by ``mfef export``.

    It runs on CUDA when this onnxruntime build has it and on the CPU otherwise; ``provider``
    says which one the session really got (onnxruntime-gpu falls back to the CPU silently).
    Images are raw uint8 NHWC arrays of the training size whatever the export: when the model
    was exported without its preprocessing, the Predictor normalises them as recorded in the
    model's metadata. Float arrays are taken as already normalised, and only by such models.

    Args:
        path: an ``.onnx`` file, or an export directory: its float32 ``model.onnx``, or with ``int8`` its
            ``model.int8.onnx``.
        providers: onnxruntime execution providers, in order of preference; default CUDA if available, else CPU.
        batch_size: images per session call.
        threads: CPU intra-op threads; default one per usable core.
        int8: in an export directory, run the int8 model (``mfef export --quantize int8``).

    Example:
        >>> predictor = Predictor("exported/digits")
        >>> predictor
        Predictor('exported/digits/model.onnx', provider='CPUExecutionProvider', input=32x32x1 uint8, classes=10)
        >>> predictor.top_k(images, k=2)[0]
        [('7', 0.981), ('1', 0.012)]
    """

    def __init__(
        self,
        path: str | os.PathLike,
        providers: Sequence[str] | None = None,
        batch_size: int = 128,
        threads: int | None = None,
        int8: bool = False,
    ):
        self.path = _model_file(Path(path), int8)
        try:
            self.session = make_session(self.path, providers, threads)
        except Exception as error:
            raise PredictError(f"Cannot load the ONNX model {self.path}: {error}") from None
        self.metadata = _model_card(self.path, self.session)
        self.class_names: list[str] = list(self.metadata["class_names"])
        self.image_shape: tuple[int, int, int] = tuple(self.metadata["input"]["shape"][1:])
        self.input_dtype: str = self.metadata["input"]["dtype"]
        self.preprocess: bool = bool(self.metadata["input"]["preprocess"])
        self.provider: str = self.session.get_providers()[0]
        self.batch_size = batch_size
        requested = list(providers or default_providers())
        if CUDA in requested and self.provider != CUDA:
            # onnxruntime-gpu falls back to the CPU without a word when CUDA cannot start (spec §7, pitfall 7).
            warnings.warn(
                f"CUDA was requested but onnxruntime runs {self.path} on {self.provider} "
                "(no usable GPU, or the CUDA 12 / cuDNN 9 libraries are missing).",
                RuntimeWarning,
                stacklevel=2,
            )

    def __repr__(self) -> str:
        height, width, channels = self.image_shape
        return (
            f"Predictor({str(self.path)!r}, provider={self.provider!r}, "
            f"input={height}x{width}x{channels} {self.input_dtype}, classes={len(self.class_names)})"
        )

    def logits(self, images: np.ndarray) -> np.ndarray:
        """The model's logits, ``(N, classes)`` float32.

        Args:
            images: ``(N, H, W, C)`` raw uint8 images (or normalised float32 for a model exported without
                preprocessing).
        """
        return run_batched(self.session, self.model_input(images), self.batch_size).astype(np.float32, copy=False)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities, ``(N, classes)`` float32 rows summing to 1.

        Args:
            images: as for `logits`.
        """
        logits = self.logits(images)
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)

    def top_k(self, images: np.ndarray, k: int = 5) -> list[list[tuple[str, float]]]:
        """The ``k`` most probable classes of each image, as ``(class name, probability)``, most probable first.

        Args:
            images: as for `logits`.
            k: classes per image (at most the number of classes).
        """
        if k < 1:
            raise PredictError(f"k must be >= 1; got {k}.")
        probabilities = self.predict(images)
        k = min(k, probabilities.shape[-1])
        order = np.argsort(-probabilities, axis=-1, kind="stable")[:, :k]
        return [[(self.class_names[i], float(row[i])) for i in indices] for row, indices in zip(probabilities, order)]

    def model_input(self, images: np.ndarray) -> np.ndarray:
        """``images`` checked and converted to what the ONNX model takes (the server batches these).

        Args:
            images: a batch ``(N, H, W, C)`` of the model's image shape, uint8 pixels or float images.
        """
        images = np.asarray(images)
        if images.ndim != 4 or tuple(images.shape[1:]) != self.image_shape:
            raise PredictError(
                f"Images of shape {tuple(images.shape)} do not fit: the model takes a batch (N, H, W, C) of "
                f"{self.image_shape} images."
            )
        if len(images) == 0:
            raise PredictError("No images to predict.")
        if images.dtype == np.uint8 or (np.issubdtype(images.dtype, np.integer) and _in_pixel_range(images)):
            raw = images.astype(np.uint8, copy=False)
            if self.preprocess:
                return raw
            normalization = self.metadata.get("normalization")
            if normalization is None:
                raise PredictError(
                    f"{self.path} takes normalised float32 images and records no normalisation, "
                    "so raw images cannot be fed to it: pass normalised float32 arrays."
                )
            return normalize(raw, normalization["mean"], normalization["std"])
        if self.preprocess:
            raise PredictError(
                f"{self.path} takes raw uint8 images (0..255); got {images.dtype}. "
                "If these are pixel values, convert them with .astype('uint8')."
            )
        return images.astype(np.float32, copy=False)


def _in_pixel_range(images: np.ndarray) -> bool:
    return bool(images.min() >= 0 and images.max() <= 255)


def _model_card(path: Path, session) -> dict:
    """The model card in the ONNX file's ``metadata_props``, checked against the model's outputs."""
    rerun = "re-export the student with `mfef export`"
    try:
        card = card_from_props(session.get_modelmeta().custom_metadata_map)
    except ValueError as error:
        raise PredictError(f"{path} has malformed mfef_keras metadata: {error}; {rerun}.") from None
    if "input" not in card or "class_names" not in card:
        raise PredictError(
            f"{path} has no mfef_keras metadata (its metadata_props lack mfef.input / mfef.class_names); "
            "the Predictor runs models written by `mfef export`."
        )
    names, spec, normalization = card["class_names"], card["input"], card.get("normalization")
    try:
        well_formed = (
            isinstance(names, list)
            and len(spec["shape"]) == 4
            and all(isinstance(v, int) for v in spec["shape"][1:])
            and spec["dtype"] in ("uint8", "float32")
            and isinstance(spec["preprocess"], bool)
            and (normalization is None or all(isinstance(normalization[k], list) for k in ("mean", "std")))
        )
    except (TypeError, KeyError):
        well_formed = False
    if not well_formed:
        raise PredictError(
            f"{path} has malformed mfef_keras metadata: mfef.class_names must be a list, mfef.input hold shape "
            f"[N, H, W, C], dtype uint8 or float32 and preprocess, mfef.normalization mean and std; got "
            f"mfef.class_names={names!r:.80}, mfef.input={spec!r:.200}; {rerun}."
        )
    _check_input(path, spec, session.get_inputs(), rerun)
    outputs = session.get_outputs()[0].shape[-1]
    if isinstance(outputs, int) and outputs != len(names):
        raise PredictError(
            f"{path} lists {len(names)} class names in its metadata (mfef.class_names) but the model has "
            f"{outputs} outputs; {rerun}."
        )
    return card


# The ONNX type of the input tensor for each dtype the metadata may record.
_ONNX_TYPES = {"uint8": "tensor(uint8)", "float32": "tensor(float)"}


def _check_input(path: Path, spec: dict, inputs: list, rerun: str) -> None:
    """Refuse metadata whose input (``spec``: shape and dtype) is not the graph's own, which onnxruntime would
    only reveal as a traceback on the first batch.
    """
    stored = f"{spec['dtype']} [N, {', '.join(map(str, spec['shape'][1:]))}]"
    if len(inputs) != 1:
        raise PredictError(
            f"{path} takes {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); a model written by "
            f"`mfef export` takes one, the images ({stored}); {rerun}."
        )
    graph = inputs[0]
    shape = list(graph.shape)
    # A dimension the graph leaves symbolic (the batch, or a size it does not fix) accepts what the metadata says.
    fits = (
        graph.type == _ONNX_TYPES[spec["dtype"]]
        and len(shape) == 4
        and all(not isinstance(dim, int) or dim == size for dim, size in zip(shape[1:], spec["shape"][1:]))
    )
    if not fits:
        dtype = next((name for name, onnx_type in _ONNX_TYPES.items() if onnx_type == graph.type), graph.type)
        raise PredictError(
            f"{path}'s metadata (mfef.input) says it takes {stored} images, but its graph's input {graph.name!r} is "
            f"{dtype} [{', '.join(map(str, shape))}]; the metadata must describe the graph: {rerun}."
        )


def _model_file(path: Path, int8: bool = False) -> Path:
    """The ONNX file ``path`` names: itself, or an export directory's float32 model (its int8 one with ``int8``).

    The names are fixed, not read from the export's metadata, so a copied or edited export cannot make predict
    run a model from elsewhere, nor the quantized one unasked.
    """
    if path.is_dir():
        name = QUANTIZED_FILES["int8"] if int8 else ONNX_FILE
        if int8 and not (path / name).is_file():
            raise PredictError(f"{path} holds no int8 model ({name}): export it with --quantize int8, or drop --int8.")
        path = path / name
    elif int8:
        raise PredictError(f"--int8 picks the int8 model of an export folder; {path} is a file, run as it is.")
    if not path.is_file():
        raise PredictError(f"No ONNX model at {path}: give an .onnx file or a directory written by `mfef export`.")
    return path
