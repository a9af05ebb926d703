"""Inference speed of a ResNet-32 student on 100 classes: Keras vs onnxruntime fp32 vs onnxruntime int8.

Measures what ``mfef export`` ships (uint8 input, normalisation inside the graph): throughput at
batch 128 and latency p50/p99 at batch 1. Weights are random (speed does not depend on them) and
int8 is calibrated on random uint8 images. Throughput rounds alternate between the engines, so that
a neighbour's load on a shared machine hits all of them alike; the best round (the least disturbed,
as `timeit` reports) and the median are printed, and ratios use the best.

Usage:
    python benchmarks/inference.py [--rounds 7] [--latency-runs 400]
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import tensorflow as tf  # noqa: E402

from mfef_keras.export import runtime  # noqa: E402
from mfef_keras.export.onnx_export import convert  # noqa: E402
from mfef_keras.export.quantize import quantize_int8  # noqa: E402
from mfef_keras.export.serving_model import input_spec, serving_model  # noqa: E402
from mfef_keras.models import get_backbone  # noqa: E402

SHAPE = (32, 32, 3)
# CIFAR-100's statistics: only the graph's shape matters for speed, but keep the real operations.
MEAN, STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
BATCH = 128


def throughput(run: Callable[[np.ndarray], object], images: np.ndarray, seconds: float) -> float:
    """Images per second of ``run`` on ``images``, over at least ``seconds`` after one warm-up call."""
    run(images)
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or calls < 3:
        run(images)
        calls += 1
    return calls * len(images) / elapsed


def latency_ms(run: Callable[[np.ndarray], object], image: np.ndarray, runs: int) -> tuple[float, float]:
    """(p50, p99) in milliseconds of ``run`` on a batch of one."""
    for _ in range(max(10, runs // 10)):
        run(image)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(image)
        times.append(time.perf_counter() - start)
    p50, p99 = np.percentile(times, [50, 99]) * 1e3
    return float(p50), float(p99)


def build_engines(workdir: Path) -> dict[str, Callable[[np.ndarray], object]]:
    """Keras ``predict_on_batch`` and onnxruntime fp32 / int8 sessions for the same uint8-input ResNet-32."""
    keras.utils.set_random_seed(0)
    model = serving_model(get_backbone("resnet32", 100, input_shape=SHAPE), SHAPE, MEAN, STD)
    fp32, int8 = workdir / "model.onnx", workdir / "model.int8.onnx"
    onnx.save(convert(model, input_spec(SHAPE, preprocess=True), opset=17), fp32)
    calibration = np.random.default_rng(1).integers(0, 256, (256, *SHAPE), dtype=np.uint8)
    quantize_int8(fp32, int8, calibration)
    sessions = {
        name: runtime.make_session(path, providers=[runtime.CPU]) for name, path in (("fp32", fp32), ("int8", int8))
    }

    def ort_runner(session: ort.InferenceSession):
        input_name, output_name = session.get_inputs()[0].name, session.get_outputs()[0].name
        return lambda images: session.run([output_name], {input_name: images})

    return {
        "keras predict_on_batch": model.predict_on_batch,
        "onnxruntime fp32": ort_runner(sessions["fp32"]),
        "onnxruntime int8 (QDQ)": ort_runner(sessions["int8"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="alternating throughput rounds per engine")
    parser.add_argument("--seconds", type=float, default=1.5, help="length of one throughput round")
    parser.add_argument("--latency-runs", type=int, default=400, help="timed batch-1 calls per engine")
    args = parser.parse_args()

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        engines = build_engines(Path(workdir))
        rng = np.random.default_rng(0)
        batch = rng.integers(0, 256, (BATCH, *SHAPE), dtype=np.uint8)
        rounds = {name: [] for name in engines}
        for _ in range(args.rounds):
            for name, run in engines.items():
                rounds[name].append(throughput(run, batch, args.seconds))
        speed = {name: max(values) for name, values in rounds.items()}
        median = {name: statistics.median(values) for name, values in rounds.items()}
        latency = {name: latency_ms(run, batch[:1], args.latency_runs) for name, run in engines.items()}

    keras_speed = speed["keras predict_on_batch"]
    fp32, int8 = speed["onnxruntime fp32"], speed["onnxruntime int8 (QDQ)"]
    print(
        f"ResNet-32, 100 classes, 32x32x3 uint8 input; {runtime.cpu_count()} cores; tensorflow {tf.__version__}, "
        f"keras {keras.__version__}, onnxruntime {ort.__version__}; throughput: best and median of {args.rounds} rounds"
    )
    print()
    print(f"| engine | b{BATCH} img/s best | median | vs Keras | b1 p50 ms | b1 p99 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in engines:
        p50, p99 = latency[name]
        ratio = speed[name] / keras_speed
        print(f"| {name} | {speed[name]:,.0f} | {median[name]:,.0f} | {ratio:.2f}x | {p50:.3f} | {p99:.3f} |")
    print()
    print(f"int8 / fp32 throughput at b{BATCH}: {int8 / fp32:.2f}x")
    checks = {
        f"onnxruntime fp32 b{BATCH} >= 2x Keras": fp32 >= 2 * keras_speed,
        "onnxruntime fp32 b1 p50 < 1 ms": latency["onnxruntime fp32"][0] < 1.0,
        f"int8 faster than fp32 at b{BATCH}": int8 > fp32,
    }
    for check, ok in checks.items():
        print(f"{'PASS' if ok else 'MISS'}  {check}")
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
