"""`mfef serve` in its own process, spoken to by tritonclient's HTTP client (a KServe V2 client written elsewhere).

One shipped zoo student is exported once and served once for the module; the last server test stops that server
with SIGTERM while a request is in flight. The tests that need the serve extra carry ``needs_serve``.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import io
import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.bad_images import png_bomb
from tests.helpers import one_error_line, run_mfef, subprocess_env

needs_serve = pytest.mark.needs_serve

# A long batching window: five requests of three images (15, under a batch) wait in the queue for it, so the
# sixth, which would take the queue past 16 images, is refused however fast the model runs.
MAX_BATCH, MAX_QUEUED, LATENCY_MS = 16, 16, 300
MODEL = "digits"
# The shipped zoo student every test here serves.
PRESET = "resnet8_mfef.digits_s0"
# Request bodies over 1 MiB get 413: far above a request of MAX_BATCH digits, even as JSON text (about 80 KB).
MAX_REQUEST_MB, LIMIT = 1, 1 << 20


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("serve") / MODEL
    result = run_mfef("export", PRESET, "--out", out)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def port() -> int:
    """A free port for the module's server."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(export_dir, port):
    command = [sys.executable, "-m", "mfef_keras.cli", "serve", str(export_dir), "--port", str(port)]
    command += ["--max-batch", str(MAX_BATCH), "--max-queued", str(MAX_QUEUED), "--max-latency-ms", str(LATENCY_MS)]
    command += ["--max-request-mb", str(MAX_REQUEST_MB)]
    # A file, not a pipe: the server logs every request, and a full pipe would stop it.
    log = export_dir.parent / "server.log"
    with open(log, "w") as output:
        process = subprocess.Popen(command, env=subprocess_env(), stdout=output, stderr=subprocess.STDOUT)
    import tritonclient.http as http

    client = http.InferenceServerClient(f"127.0.0.1:{port}", concurrency=32)
    deadline = time.monotonic() + 120
    while not _ready(client):
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the server did not become ready in 120 s"
        time.sleep(0.5)
    yield process, client
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)


def _ready(client) -> bool:
    try:
        return client.is_server_ready()
    except Exception:  # not listening yet
        return False


def _tensor(images: np.ndarray, binary: bool = True):
    import tritonclient.http as http

    tensor = http.InferInput("input", list(images.shape), http.np_to_triton_dtype(images.dtype))
    tensor.set_data_from_numpy(images, binary_data=binary)
    return tensor


def _encoded(blobs: list[bytes]):
    import tritonclient.http as http

    tensor = http.InferInput("images", [len(blobs)], "BYTES")
    tensor.set_data_from_numpy(np.array(blobs, dtype=np.object_), binary_data=True)
    return tensor


def _infer(client, tensor, binary: bool = True, model: str = MODEL):
    import tritonclient.http as http

    outputs = [http.InferRequestedOutput(name, binary_data=binary) for name in ("logits", "labels")]
    result = client.infer(model, [tensor], outputs=outputs)
    # JSON carries BYTES as text, the binary extension as bytes.
    labels = [label if isinstance(label, str) else label.decode() for label in result.as_numpy("labels")]
    return result.as_numpy("logits"), labels


def _refused(client, tensor) -> str:
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as refusal:
        client.infer(MODEL, [tensor])
    assert refusal.value.status() == "400", refusal.value
    return refusal.value.message()


def _images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 32, 32, 1), dtype=np.uint8)


def _png(image: np.ndarray, format_: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0]).save(buffer, format_)
    return buffer.getvalue()


def _predicted(export_dir, *files) -> list[tuple[str, float]]:
    """`mfef predict`'s top class and probability for each file, in order."""
    result = run_mfef("predict", export_dir, *files, "--top-k", "1")
    assert result.returncode == 0, result.stderr
    return [(label, float(p)) for label, p in re.findall(r"^\s+1\. (\S+)\s+([0-9.]+)$", result.stdout, re.M)]


def _top1(logits: np.ndarray, labels: list[str]) -> list[tuple[str, float]]:
    probabilities = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    return [(label, round(float(row.max()), 4)) for label, row in zip(labels, probabilities)]


@needs_serve
def test_health_and_metadata(server):
    _, client = server
    assert client.is_server_live() and client.is_model_ready(MODEL)
    metadata = client.get_model_metadata(MODEL)
    assert metadata["name"] == MODEL
    assert {"name": "input", "datatype": "UINT8", "shape": [-1, 32, 32, 1]} in metadata["inputs"]
    assert [o["name"] for o in metadata["outputs"]] == ["logits", "labels"]


@needs_serve
def test_outputs_equal_mfef_predict(server, export_dir, tmp_path):
    _, client = server
    images = _images(3)
    np.save(tmp_path / "batch.npy", images)
    (tmp_path / "one.png").write_bytes(_png(images[0]))
    (tmp_path / "two.jpg").write_bytes(_png(images[1], "JPEG"))
    expected = _predicted(export_dir, tmp_path / "batch.npy", tmp_path / "one.png", tmp_path / "two.jpg")

    json_logits, json_labels = _infer(client, _tensor(images, binary=False), binary=False)
    binary_logits, binary_labels = _infer(client, _tensor(images))
    np.testing.assert_array_equal(json_logits, binary_logits)
    assert json_labels == binary_labels
    encoded_logits, encoded_labels = _infer(client, _encoded([_png(images[0]), _png(images[1], "JPEG")]))
    served = _top1(json_logits, json_labels) + _top1(encoded_logits, encoded_labels)
    assert served == expected
    np.testing.assert_allclose(encoded_logits[0], json_logits[0], rtol=0, atol=1e-5)


@needs_serve
def test_bad_inputs_get_400_naming_the_problem_and_the_server_goes_on(server, tmp_path):
    _, client = server
    assert "shape [2, 28, 28, 1]" in _refused(client, _tensor(np.zeros((2, 28, 28, 1), np.uint8)))
    assert "datatype FP32" in _refused(client, _tensor(np.zeros((1, 32, 32, 1), np.float32)))
    assert "Cannot decode image images[0]" in _refused(client, _encoded([b"not an image"]))
    png_bomb(tmp_path / "bomb.png")
    assert "decompression bomb" in _refused(client, _encoded([(tmp_path / "bomb.png").read_bytes()]))
    too_many = _refused(client, _tensor(_images(MAX_BATCH + 1)))
    assert f"too large a request: {MAX_BATCH + 1} images, at most {MAX_BATCH}" in too_many
    assert len(_infer(client, _tensor(_images(1)))[1]) == 1


@needs_serve
def test_a_binary_tensor_that_does_not_fill_its_shape_gets_400_and_the_server_goes_on(server, port):
    """The binary-tensor extension is read by mfef's data plane, not KServe's (which answered 500 here)."""
    _, client = server
    spec = {"name": "input", "shape": [1, 32, 32, 1], "datatype": "UINT8", "parameters": {"binary_data_size": 100}}
    header = json.dumps({"inputs": [spec]}).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}
        connection.request("POST", f"/v2/models/{MODEL}/infer", body=header + bytes(100), headers=headers)
        response = connection.getresponse()
        status, message = response.status, json.loads(response.read())["error"]
    finally:
        connection.close()
    assert status == 400, message
    assert "input 'input' cannot be read as UINT8 [1, 32, 32, 1]" in message and "size 100" in message
    assert len(_infer(client, _tensor(_images(1)))[1]) == 1


@needs_serve
def test_a_burst_beyond_the_queue_is_refused_with_503_and_the_server_still_answers(server):
    from tritonclient.utils import InferenceServerException

    _, client = server
    requests = [client.async_infer(MODEL, [_tensor(_images(3, seed))]) for seed in range(24)]
    statuses = []
    for request in requests:
        try:
            request.get_result()
            statuses.append("200")
        except InferenceServerException as error:
            assert "overloaded" in error.message(), error
            statuses.append(error.status())
    assert statuses.count("200") >= MAX_QUEUED // 3 and "503" in statuses, statuses
    assert set(statuses) == {"200", "503"}
    assert len(_infer(client, _tensor(_images(2)))[1]) == 2


def _raw_post(port: int, headers: dict[str, str], chunks: list[bytes] = ()) -> tuple[int, dict, str]:
    """POST an infer request by hand, the body (if any) in ``chunks``; the status, headers and error message.

    The body is never finished: a server that waited for all of it before answering would time out here.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest("POST", f"/v2/models/{MODEL}/infer")
        for name, value in {"Content-Type": "application/json", **headers}.items():
            connection.putheader(name, value)
        connection.endheaders()
        for chunk in chunks:
            connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())["error"]
    finally:
        connection.close()


@needs_serve
def test_a_body_over_the_limit_gets_413_before_it_is_read_and_the_server_goes_on(server, port):
    from tritonclient.utils import InferenceServerException

    _, client = server
    setting = f"at most {LIMIT:,} bytes (--max-request-mb {MAX_REQUEST_MB})"

    # A Content-Length over the limit: answered before a byte of the body is sent.
    status, headers, message = _raw_post(port, {"Content-Length": str(50 * LIMIT)})
    assert status == 413 and headers.get("connection") == "close", (status, headers)
    assert f"a body of {50 * LIMIT:,} bytes (Content-Length), {setting}" in message

    # A chunked body: cut off once it passes the limit, its end never sent.
    chunk = b"x" * (64 << 10)
    status, headers, message = _raw_post(port, {"Transfer-Encoding": "chunked"}, [chunk] * (LIMIT // len(chunk) + 1))
    assert status == 413 and headers.get("connection") == "close", (status, headers)
    assert re.search(rf"a body of at least [0-9,]+ bytes \(read no further\), {re.escape(setting)}", message), message

    # A V2 client's oversized tensor (its shape would be refused too, but the size is seen first).
    with pytest.raises(InferenceServerException) as refusal:
        client.infer(MODEL, [_tensor(np.zeros((4, 512, 512, 1), np.uint8))])
    assert refusal.value.status() == "413" and setting in refusal.value.message(), refusal.value
    assert len(_infer(client, _tensor(_images(MAX_BATCH), binary=False), binary=False)[1]) == MAX_BATCH


def test_the_default_body_limit_grows_with_the_batch_above_16_mib():
    from mfef_keras.export.request_limit import MIB, default_max_request_bytes

    assert default_max_request_bytes(256, (32, 32, 1)) == 16 * MIB
    # 32 bytes per pixel value: room for a batch of float32 images written as JSON text.
    assert default_max_request_bytes(32, (224, 224, 3)) == 32 * 32 * 224 * 224 * 3


@needs_serve
def test_sigterm_finishes_the_request_in_flight_and_exits(server):
    process, client = server
    # It waits LATENCY_MS for a batch to fill: the signal arrives while it is queued.
    in_flight = client.async_infer(MODEL, [_tensor(_images(4))])
    time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert in_flight.get_result().as_numpy("logits").shape == (4, 10)
    assert process.wait(timeout=60) == 0


@needs_serve
def test_the_serve_path_imports_no_tensorflow():
    script = (
        "import sys, mfef_keras.cli, mfef_keras.export.inference_server; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'jax') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=subprocess_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_serve_names_what_is_missing_in_one_line(tmp_path):
    """Without the serve extra: the extra to install; with it: the model that cannot load. No traceback either way."""
    (tmp_path / "model.onnx").write_bytes(b"not onnx")
    result = run_mfef("serve", tmp_path, "--port", "1")
    installed = importlib.util.find_spec("kserve") is not None
    one_error_line(result, "Cannot load the ONNX model" if installed else "pip install 'mfef-keras[serve]'")


@needs_serve
def test_a_queue_smaller_than_a_batch_is_refused(export_dir):
    result = run_mfef("serve", export_dir, "--max-batch", "8", "--max-queued", "4")
    one_error_line(result, "--max-queued 4 is below --max-batch 8")


@contextlib.contextmanager
def _separate_server(source, log: Path, env: dict[str, str] | None = None):
    """``mfef serve SOURCE`` in its own process until the block ends, then SIGTERM; yields a tritonclient client.

    Raises AssertionError when the server does not become ready in 180 s or does not exit with status 0.
    """
    import tritonclient.http as http

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "mfef_keras.cli", "serve", str(source), "--port", str(port)]
    with open(log, "w") as output:
        process = subprocess.Popen(command, env=env or subprocess_env(), stdout=output, stderr=subprocess.STDOUT)
    try:
        client = http.InferenceServerClient(f"127.0.0.1:{port}")
        # A zoo name or run is exported before the server starts: a few seconds to half a minute here.
        deadline = time.monotonic() + 180
        while not _ready(client):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        yield client
    finally:
        process.terminate()
        assert process.wait(timeout=60) == 0, log.read_text()


# Slow (a second export and server: about 20 s on the loaded 2-core machine); .ci/run's serve step runs it.
@needs_serve
@pytest.mark.slow
def test_a_no_preprocess_export_takes_normalised_float32_and_encoded_images(tmp_path):
    from mfef_keras.export.predictor import Predictor

    export = tmp_path / MODEL
    result = run_mfef("export", PRESET, "--no-preprocess", "--out", export)
    assert result.returncode == 0, result.stderr
    predictor = Predictor(export)
    images = _images(2)
    normalised = predictor.model_input(images)
    assert normalised.dtype == np.float32
    with _separate_server(export, tmp_path / "server.log") as client:
        logits, _ = _infer(client, _tensor(normalised))
        np.testing.assert_allclose(logits, predictor.logits(images), rtol=0, atol=1e-5)
        encoded, _ = _infer(client, _encoded([_png(images[0]), _png(images[1])]))
        np.testing.assert_allclose(encoded, logits, rtol=0, atol=1e-5)
        assert "datatype UINT8" in _refused(client, _tensor(images))


def _ranked(export_dir, *files) -> list[list[tuple[str, float]]]:
    """`mfef predict`'s classes for each image of ``files``, every class, most probable first, with its probability."""
    result = run_mfef("predict", export_dir, *files, "--top-k", "10")
    assert result.returncode == 0, result.stderr
    rows = re.findall(r"^\s+(\d+)\. (\S+)\s+([0-9.]+)$", result.stdout, re.M)
    ranked: list[list[tuple[str, float]]] = []
    for rank, label, probability in rows:
        if rank == "1":
            ranked.append([])
        ranked[-1].append((label, float(probability)))
    return ranked


# Slow (mfef serve exports the preset before it serves: about 12 s on the loaded 2-core machine, after the module's
# own export); .ci/run's serve step runs it.
@needs_serve
@pytest.mark.slow
def test_a_zoo_name_is_exported_then_served_as_mfef_predict_runs_it(export_dir, tmp_path):
    """``mfef serve PRESET``: the shipped preset, taken into an empty cache offline, served under its own name."""
    from mfef_keras.export.predictor import Predictor

    cache, scratch = tmp_path / "cache", tmp_path / "scratch"
    scratch.mkdir()
    # TMPDIR: where serve's temporary export goes, to see that it is removed on exit.
    env = subprocess_env(MFEF_ZOO_OFFLINE="1", MFEF_ZOO_CACHE=str(cache), TMPDIR=str(scratch))
    images = _images(5, seed=7)
    np.save(tmp_path / "batch.npy", images)
    with _separate_server(PRESET, tmp_path / "server.log", env) as client:
        assert client.get_model_metadata(PRESET)["name"] == PRESET
        logits, labels = _infer(client, _tensor(images), model=PRESET)
        json_logits, _ = _infer(client, _tensor(images, binary=False), binary=False, model=PRESET)
    assert any(cache.rglob("model.keras")), "the preset did not go through the cache"
    assert not any(scratch.iterdir()), "mfef serve left its temporary export behind"

    # mfef predict on an export of the same preset: the same logits, so the same probability for every class.
    predictor = Predictor(export_dir)
    np.testing.assert_allclose(logits, predictor.logits(images), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(json_logits, logits)
    predicted = _ranked(export_dir, tmp_path / "batch.npy")
    assert len(predicted) == len(images)
    for row, label, ranked in zip(logits, labels, predicted):
        probabilities = np.exp(row - row.max())
        probabilities /= probabilities.sum()
        assert label == ranked[0][0]
        # predict prints four decimals.
        assert dict(ranked) == pytest.approx(dict(zip(predictor.class_names, probabilities.tolist())), abs=1e-4)


@needs_serve
def test_the_server_loop_is_uvloop_when_installed():
    """KServe's server runs in the loop `mfef serve` makes, and the serve extra installs uvloop for it."""
    import asyncio

    from mfef_keras.export.inference_server import _run

    async def loop_type() -> str:
        return type(asyncio.get_running_loop()).__module__

    expected = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    assert _run(loop_type()).split(".")[0] == expected
