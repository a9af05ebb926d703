"""Throughput and latency of `mfef serve` over loopback, beside onnxruntime in-process on the same model and batch.

The server runs in its own process (dynamic batching on); clients are tritonclient's asyncio HTTP client, binary
tensors, CONCURRENCY requests in flight at once, each of ``--batch`` raw uint8 images. In-process is the same
export run by `Predictor` on the same batches, one call after another in this process. The ratio at the highest
concurrency is the server's throughput over in-process throughput. Needs the serve extra.

Usage:
    python benchmarks/serve_load.py EXPORT_DIR [--seconds 10] [--batch 1] [--concurrency 1 8 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODEL = "bench"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _row(name: str, latencies: list[float], images: int, seconds: float) -> dict:
    milliseconds = 1000 * np.asarray(latencies)
    return {
        "name": name,
        "images_per_s": images / seconds,
        "p50_ms": float(np.percentile(milliseconds, 50)),
        "p99_ms": float(np.percentile(milliseconds, 99)),
    }


def in_process(export_dir: Path, batch: np.ndarray, seconds: float) -> dict:
    from mfef_keras.export.predictor import Predictor

    predictor = Predictor(export_dir, batch_size=len(batch))
    predictor.logits(batch)
    latencies, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds:
        began = time.perf_counter()
        predictor.logits(batch)
        latencies.append(time.perf_counter() - began)
    return _row("in-process onnxruntime", latencies, len(latencies) * len(batch), time.perf_counter() - start)


async def served(url: str, batch: np.ndarray, concurrency: int, seconds: float) -> dict:
    import tritonclient.http.aio as http

    client = http.InferenceServerClient(url, conn_limit=concurrency)
    tensor = http.InferInput("input", list(batch.shape), "UINT8")
    tensor.set_data_from_numpy(batch, binary_data=True)
    outputs = [http.InferRequestedOutput("logits", binary_data=True)]
    await client.infer(MODEL, [tensor], outputs=outputs)
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def user() -> None:
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            await client.infer(MODEL, [tensor], outputs=outputs)
            latencies.append(time.perf_counter() - began)

    start = time.perf_counter()
    await asyncio.gather(*(user() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    await client.close()
    return _row(f"mfef serve, concurrency {concurrency}", latencies, len(latencies) * len(batch), elapsed)


def start_server(export_dir: Path, port: int, max_batch: int, max_latency_ms: float, log) -> subprocess.Popen:
    command = [sys.executable, "-m", "mfef_keras.cli", "serve", str(export_dir), "--port", str(port), "--name", MODEL]
    command += ["--max-batch", str(max_batch), "--max-latency-ms", str(max_latency_ms), "--max-queued", "4096"]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    import tritonclient.http as http

    client = http.InferenceServerClient(f"127.0.0.1:{port}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if client.is_server_ready():
                return process
        except Exception:  # not listening yet
            time.sleep(0.5)
    process.kill()
    raise SystemExit(f"mfef serve did not start; see {log.name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export_dir", type=Path, help="A directory written by `mfef export`.")
    parser.add_argument("--seconds", type=float, default=10.0, help="Seconds per measurement.")
    parser.add_argument("--batch", type=int, default=1, help="Images per request (and per in-process call).")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-batch", type=int, default=32, help="The server's --max-batch.")
    parser.add_argument("--max-latency-ms", type=float, default=2.0, help="The server's --max-latency-ms.")
    args = parser.parse_args()

    from mfef_keras.export.predictor import Predictor

    shape = Predictor(args.export_dir).image_shape
    batch = np.random.default_rng(0).integers(0, 256, (args.batch, *shape), dtype=np.uint8)
    port = _free_port()
    with tempfile.NamedTemporaryFile("w", prefix="serve-load-", suffix=".log", delete=False) as log:
        server = start_server(args.export_dir, port, args.max_batch, args.max_latency_ms, log)
        try:
            rows = [asyncio.run(served(f"127.0.0.1:{port}", batch, c, args.seconds)) for c in args.concurrency]
        finally:
            server.terminate()
            server.wait(timeout=60)
    rows.append(in_process(args.export_dir, batch, args.seconds))
    print(
        f"{args.export_dir}: {args.batch} image(s) of {shape} per request; server --max-batch {args.max_batch} "
        f"--max-latency-ms {args.max_latency_ms}; {os.cpu_count()} CPU(s)"
    )
    print(f"{'':34} {'images/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for row in rows:
        print(f"{row['name']:34} {row['images_per_s']:10.0f} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f}")
    ratio = rows[-2]["images_per_s"] / rows[-1]["images_per_s"]
    print(f"served / in-process throughput at concurrency {args.concurrency[-1]}: {ratio:.0%}")


if __name__ == "__main__":
    main()
