"""``mfef serve``: an exported student behind the Open Inference Protocol (KServe V2), on KServe's server.

Only onnxruntime, numpy, pillow and the `serve` extra are imported (no TensorFlow, no Keras), so the slim
serving image runs it. KServe provides the HTTP endpoints (health, metadata, JSON and binary-tensor infer) and
uvicorn's graceful shutdown; this module supplies the model: input checks, dynamic batching and the outputs.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import numpy as np
import orjson

from mfef_keras.export.dynamic_batcher import DynamicBatcher, Overloaded
from mfef_keras.export.errors import PredictError
from mfef_keras.export.images import decode_images
from mfef_keras.export.predictor import Predictor
from mfef_keras.export.request_limit import MIB, RequestBodyLimit, default_max_request_bytes


def _import_kserve():
    # kserve parses sys.argv when imported (its own flags); ours are not its, so it must see none.
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        import kserve
        from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING, INFERENCE_CONTENT_LENGTH_HEADER
        from kserve.protocol.dataplane import DataPlane
        from kserve.protocol.rest.server import RESTServer
    finally:
        sys.argv = argv
    return kserve, DataPlane, RESTServer, FASTAPI_APP_IMPORT_STRING, INFERENCE_CONTENT_LENGTH_HEADER


kserve, DataPlane, RESTServer, FASTAPI_APP_IMPORT_STRING, INFERENCE_CONTENT_LENGTH_HEADER = _import_kserve()
from kserve.errors import InvalidInput, ServerNotReady  # noqa: E402
from kserve.protocol.infer_type import (  # noqa: E402
    InferInput,
    InferRequest,
    RequestedOutput,
    deserialize_bytes_tensor,
)
from kserve.utils.numpy_codec import to_np_dtype  # noqa: E402

# Outputs of every infer response.
LOGITS, LABELS = "logits", "labels"
# A BYTES input of this name holds encoded images (PNG/JPEG); any other input is the model's own tensor.
ENCODED = "images"
# The model's own dtypes as V2 datatypes.
_DATATYPES = {"uint8": "UINT8", "float32": "FP32"}


class StudentDataPlane(DataPlane):
    """KServe's data plane, with the binary-tensor extension read here and JSON sent as bytes taken as meant.

    A JSON request sent without ``Content-Type: application/json`` (tritonclient's HTTP client sends them so):
    FastAPI hands its body over as bytes, which KServe 0.21 reads only as the binary-tensor extension. And binary
    inputs: KServe turns each into a Python list, element by element (about 0.5 ms per 32 x 32 image here, a
    fifth of a one-image request's time in the server), and a BYTES input (encoded images) into JSON text, which
    fails on any byte that is not UTF-8; here a binary input stays the array its bytes are.
    """

    def decode_inference_request(self, body, headers, model_name):
        if not isinstance(body, bytes):
            return super().decode_inference_request(body, headers, model_name)
        json_length = int(headers.get(INFERENCE_CONTENT_LENGTH_HEADER, len(body)))
        try:
            header = orjson.loads(body[:json_length])
            specs = list(header["inputs"])
            binary = any("binary_data_size" in (spec.get("parameters") or {}) for spec in specs)
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
            raise InvalidInput(f"Unrecognized request format: {error!r}") from None
        if not binary:
            headers = {**headers, INFERENCE_CONTENT_LENGTH_HEADER: str(json_length)}
            return super().decode_inference_request(body, headers, model_name)
        return _binary_request(header, body, json_length, model_name)


def _binary_request(header: dict, body: bytes, start: int, model_name: str):
    """The InferRequest of a binary-extension request (``header`` its JSON part), binary inputs kept as arrays."""
    inputs = []
    for spec in header["inputs"]:
        parameters = dict(spec.get("parameters") or {})
        size = parameters.pop("binary_data_size", None)
        tensor = InferInput(name=spec["name"], shape=spec["shape"], datatype=spec["datatype"], parameters=parameters)
        if size is None:
            tensor.data = spec.get("data")
        else:
            tensor.set_data_from_numpy(_binary_tensor(body[start : start + size], tensor), binary_data=True)
            start += size
        inputs.append(tensor)
    outputs = [RequestedOutput(name=o["name"], parameters=o.get("parameters")) for o in header.get("outputs") or []]
    return InferRequest(
        model_name=model_name,
        request_id=header.get("id"),
        parameters=header.get("parameters"),
        infer_inputs=inputs,
        request_outputs=outputs or None,
    )


def _binary_tensor(data: bytes, tensor) -> np.ndarray:
    try:
        if tensor.datatype == "BYTES":
            return deserialize_bytes_tensor(data)
        return np.frombuffer(data, dtype=to_np_dtype(tensor.datatype)).reshape(tensor.shape)
    except (ValueError, TypeError) as error:
        raise InvalidInput(
            f"input {tensor.name!r} cannot be read as {tensor.datatype} {tensor.shape}: {error}"
        ) from None


class StudentModel(kserve.Model):
    """An exported student as a KServe V2 model: raw tensors or encoded images in, logits and labels out.

    Args:
        name: the model's name in the URLs (``/v2/models/{name}``).
        predictor: the exported model, run by onnxruntime.
        max_batch: images per model run, and per request.
        max_latency_ms: how long a batch waits for more requests.
        max_queued: images that may wait before requests are refused with 503.
        max_request_bytes: encoded image bytes per request.

    Example:
        >>> model = StudentModel("digits", Predictor("exported/digits"), max_batch=32, max_latency_ms=5)
    """

    def __init__(
        self,
        name: str,
        predictor: Predictor,
        max_batch: int,
        max_latency_ms: float,
        max_queued: int | None = None,
        max_request_bytes: int = 16 << 20,
    ):
        super().__init__(name)
        self.predictor = predictor
        self.max_batch = max_batch
        self.max_request_bytes = max_request_bytes
        self.batcher = DynamicBatcher(predictor.logits, max_batch, max_latency_ms, max_queued or 8 * max_batch)
        self.ready = True

    def get_input_types(self) -> list[dict]:
        datatype = _DATATYPES[self.predictor.input_dtype]
        return [
            {"name": "input", "datatype": datatype, "shape": [-1, *self.predictor.image_shape]},
            {"name": ENCODED, "datatype": "BYTES", "shape": [-1]},
        ]

    def get_output_types(self) -> list[dict]:
        return [
            {"name": LOGITS, "datatype": "FP32", "shape": [-1, len(self.predictor.class_names)]},
            {"name": LABELS, "datatype": "BYTES", "shape": [-1]},
        ]

    async def predict(self, payload, headers=None, response_headers=None):
        images = self._images(payload)
        try:
            logits = await self.batcher.submit(images)
        except Overloaded as error:
            raise ServerNotReady(str(error)) from None
        except PredictError as error:
            raise InvalidInput(str(error)) from None
        labels = np.array([self.predictor.class_names[i].encode() for i in logits.argmax(axis=-1)], dtype=np.object_)
        binary = payload.use_binary_outputs
        outputs = []
        for name, array, datatype in ((LOGITS, logits, "FP32"), (LABELS, labels, "BYTES")):
            output = kserve.InferOutput(name=name, shape=list(array.shape), datatype=datatype)
            output.set_data_from_numpy(array, binary_data=binary)
            outputs.append(output)
        return kserve.InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=outputs)

    def _images(self, payload) -> np.ndarray:
        """The request's one input as a batch the model takes; InvalidInput naming what is wrong otherwise."""
        if len(payload.inputs) != 1:
            raise InvalidInput(
                f"a request takes exactly one input (the images); got {len(payload.inputs)}: "
                f"{', '.join(i.name for i in payload.inputs)}."
            )
        tensor = payload.inputs[0]
        shape = list(tensor.shape)
        count = shape[0] if shape else 0
        if count > self.max_batch:
            raise InvalidInput(f"too large a request: {count} images, at most {self.max_batch} (--max-batch).")
        try:
            if tensor.datatype == "BYTES":
                return self._decoded(tensor)
            return self._tensor(tensor)
        except PredictError as error:
            raise InvalidInput(str(error)) from None

    def _decoded(self, tensor) -> np.ndarray:
        encoded = [item if isinstance(item, bytes) else str(item).encode() for item in tensor.as_numpy().ravel()]
        size = sum(len(item) for item in encoded)
        if size > self.max_request_bytes:
            raise InvalidInput(f"too large a request: {size:,} bytes of images, at most {self.max_request_bytes:,}.")
        names = [f"{tensor.name}[{i}]" for i in range(len(encoded))]
        return decode_images(encoded, names, self.predictor.image_shape)[0]

    def _tensor(self, tensor) -> np.ndarray:
        expected = _DATATYPES[self.predictor.input_dtype]
        if tensor.datatype != expected:
            raise InvalidInput(
                f"input {tensor.name!r} has datatype {tensor.datatype}; the model takes {expected} "
                f"(or encoded PNG/JPEG images as BYTES)."
            )
        height, width, channels = self.predictor.image_shape
        if len(tensor.shape) != 4 or list(tensor.shape[1:]) != [height, width, channels]:
            raise InvalidInput(
                f"input {tensor.name!r} has shape {list(tensor.shape)}; the model takes [N, {height}, {width}, "
                f"{channels}]."
            )
        try:
            images = tensor.as_numpy()
        except Exception as error:
            raise InvalidInput(f"input {tensor.name!r} cannot be read as {tensor.datatype}: {error}") from None
        if images.size == 0:
            raise InvalidInput(f"input {tensor.name!r} holds no images.")
        return self.predictor.model_input(images)


class LimitedRESTServer(RESTServer):
    """KServe's REST server with `RequestBodyLimit` in front of its FastAPI app.

    KServe builds the app (``kserve.model_server:app``) and its middlewares in ``create_application``; this adds
    one more there, the last added and so the outermost of them, so a body over the limit is refused before
    KServe reads it into memory.

    Args:
        *args: `RESTServer`'s.
        max_request_bytes: the largest request body accepted.
        setting: how that limit was set, named in the 413 message.
        **kwargs: `RESTServer`'s.
    """

    def __init__(self, *args, max_request_bytes: int, setting: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_request_bytes = max_request_bytes
        self.setting = setting

    def _add_middlewares(self, app) -> None:
        super()._add_middlewares(app)
        app.add_middleware(RequestBodyLimit, max_bytes=self.max_request_bytes, setting=self.setting)


def serve(
    model_dir: Path,
    host: str = "127.0.0.1",
    port: int = 8080,
    int8: bool = False,
    max_batch: int = 32,
    max_latency_ms: float = 5.0,
    max_queued: int | None = None,
    name: str | None = None,
    max_request_mb: float | None = None,
) -> None:
    """Serve the export in ``model_dir`` until SIGTERM or SIGINT, which finish the requests in flight first.

    Args:
        model_dir: a directory written by `mfef export` (or an ``.onnx`` file).
        host: address to listen on.
        port: TCP port.
        int8: run the export's int8 model.
        max_batch: images per model run and per request.
        max_latency_ms: how long a batch waits for more requests.
        max_queued: images that may wait (default eight batches); beyond, requests get 503.
        name: the model's name in the URLs (default the directory's name).
        max_request_mb: the largest request body in MiB, larger ones get 413 unread (default: the larger of
            16 MiB and 32 bytes per pixel value of ``max_batch`` images).
    """
    if max_queued is not None and max_queued < max_batch:
        raise PredictError(
            f"--max-queued {max_queued} is below --max-batch {max_batch}: a full request could never be queued."
        )
    predictor = Predictor(model_dir, batch_size=max_batch, int8=int8)
    if max_request_mb is None:
        max_request_bytes = default_max_request_bytes(max_batch, predictor.image_shape)
        setting = f"--max-request-mb, default {max_request_bytes / MIB:g} for --max-batch {max_batch}"
    else:
        max_request_bytes = int(max_request_mb * MIB)
        setting = f"--max-request-mb {max_request_mb:g}"
    # Encoded images are bounded by the same figure: the body holds them, and a second, smaller bound on them
    # alone would refuse a request that the body limit lets through.
    model = StudentModel(
        name or _model_name(model_dir), predictor, max_batch, max_latency_ms, max_queued, max_request_bytes
    )
    server = kserve.ModelServer(http_port=port, enable_grpc=False, workers=1, grace_period=30)
    server.register_model(model)
    model.start()
    rest = LimitedRESTServer(
        FASTAPI_APP_IMPORT_STRING,
        StudentDataPlane(model_registry=server.registered_models),
        server.model_repository_extension,
        port,
        grace_period=30,
        max_request_bytes=max_request_bytes,
        setting=setting,
    )
    # KServe binds every interface; loopback by default keeps a development server private.
    rest.config.host = host
    print(f"serving {predictor.path} as model {model.name!r} on http://{host}:{port}/v2", file=sys.stderr, flush=True)
    # uvicorn finishes the requests in flight on SIGTERM/SIGINT, then re-raises the signal to the handler that
    # was there before it started: this one turns that into a clean exit (status 0) instead of death by signal.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_cleanly)
    _run(rest.start())


def _run(main):
    # uvicorn picks uvloop only for a loop it creates; KServe's server runs in ours, so choose it here. uvloop's
    # loop raised served throughput at concurrency 32 from 68-70 % to 73-75 % of in-process (README, Serving).
    try:
        import uvloop
    except ImportError:  # Windows: uvloop is not built there
        return asyncio.run(main)
    return uvloop.run(main)


def _exit_cleanly(signum: int, frame) -> None:
    raise SystemExit(0)


def _model_name(path: Path) -> str:
    path = Path(path).resolve()
    return (path.parent if path.is_file() else path).name
