"""The Python half of `device_check.sh`: environment, the MFEF step on JAX, the training report, the final table.

Each subcommand prints one JSON line (``RESULT {...}``) that the shell script stores under its work folder;
``table`` reads them all and renders the one markdown table. Only JAX, numpy, Keras and this package are
needed (no TensorFlow, no torch): it runs on the GPU machine's Python 3.12 with its own JAX.

Subcommands:
    env                         versions, JAX devices and the GPU's name.
    step --batch-size N --precision P [--backbone B --steps S]
                                one fresh process per call: builds 2 x B (resnet32) on CIFAR-100 shapes with the
                                MFEF fusion path, compiles the step, then: img/s over S unsynchronised steps,
                                the median of S steps each waited for (p50), the device's peak memory in use,
                                and the package's numpy input pipeline's img/s at the same batch (pad, random
                                crop, flip, normalise), to tell whether the host keeps the device fed.
    plan --seconds T            the epochs of the training run that fit in T seconds, from the step results.
    train-report --run-dir D    seconds per epoch and test top-1 of a `mfef train` run, from its metrics.csv.
    table --results DIR         the final markdown table from every result in DIR.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

RESULT_PREFIX = "RESULT "
IMAGE_SHAPE, NUM_CLASSES = (32, 32, 3), 100
# CIFAR's per-channel mean and std (of images in [0, 1]) and its augmentation: the recipe's.
CIFAR_MEAN, CIFAR_STD, CIFAR_PAD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 4
# Fashion-MNIST's split sizes as `mfef train` uses them (5,000 of the 60,000 training images validate).
FASHION_TRAIN, FASHION_EVAL = 55_000, 15_000
# The first epoch also compiles the train and test steps; measured ~1 min for resnet32 on a CPU.
COMPILE_ALLOWANCE_S = 60.0
HERE = Path(__file__).resolve().parent


def emit(result: Mapping) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def read_results(text: str) -> list[dict]:
    """Every ``RESULT {...}`` line of a log, parsed; other lines are ignored."""
    return [json.loads(line[len(RESULT_PREFIX) :]) for line in text.splitlines() if line.startswith(RESULT_PREFIX)]


# ---------------------------------------------------------------------- env
def environment() -> dict:
    """Python, JAX, Keras, numpy and package versions; the JAX backend and its devices."""
    import platform

    import jax
    import keras
    import numpy as np

    import mfef_keras

    devices = jax.devices()
    return dict(
        kind="env",
        python=platform.python_version(),
        jax=jax.__version__,
        keras=keras.__version__,
        keras_backend=keras.backend.backend(),
        numpy=np.__version__,
        mfef_keras=mfef_keras.__version__,
        jax_backend=jax.default_backend(),
        devices=[f"{d.platform}:{d.id} {d.device_kind}" for d in devices],
        device_kind=devices[0].device_kind,
    )


# --------------------------------------------------------------------- step
def pipeline_img_s(batch_size: int, batches: int = 20) -> float:
    """Images per second of the package's TF-free training pipeline on 10,000 random CIFAR-shaped uint8 images.

    `mfef_keras.data.numpy_pipeline.NumpyBatches` with the recipe's augmentation (black padding by 4, random
    crop, flip) and normalisation, what `mfef train` feeds the JAX step with when TensorFlow is absent; one
    thread, batch after batch, as `fit` draws them.
    """
    import numpy as np

    from mfef_keras.data.numpy_pipeline import NumpyBatches
    from mfef_keras.data.source import Augmentation

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10_000, *IMAGE_SHAPE), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, 10_000).astype("int32")
    augmentation = Augmentation(pad=CIFAR_PAD, pad_mode="CONSTANT", flip=True)
    pipeline = NumpyBatches(
        images,
        labels,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        augmentation=augmentation,
        batch_size=batch_size,
        training=True,
        seed=0,
    )
    batches = min(batches, len(pipeline))
    start = time.perf_counter()
    for index in range(batches):
        pipeline[index]
    return batches * batch_size / (time.perf_counter() - start)


def peak_device_bytes() -> int | None:
    """The first device's peak memory in use since the process started (None where JAX does not track it)."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def measure_step(backbone: str, batch_size: int, precision: str, steps: int) -> dict:
    """The MFEF step of 2 x ``backbone`` on CIFAR-100 shapes, as `fit` runs it on JAX (see the module doc)."""
    import numpy as np

    sys.path.insert(0, str(HERE))
    from jax_step import JaxTrainFunction, build_distiller

    start = time.perf_counter()
    train = JaxTrainFunction(build_distiller("mfef/independent", backbone, NUM_CLASSES, precision, jit=True))
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch_size, *IMAGE_SHAPE)).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, batch_size).astype("int32")
    float(train(images, labels)["loss"])  # traces and compiles
    compile_s = time.perf_counter() - start
    float(train(images, labels)["loss"])
    # Throughput: steps queued back to back, as fit queues them; the last loss waits for all.
    start = time.perf_counter()
    for _ in range(steps):
        logs = train(images, labels)
    loss = float(logs["loss"])
    img_s = steps * batch_size / (time.perf_counter() - start)
    # Latency: each step waited for.
    step_s = []
    for _ in range(steps):
        start = time.perf_counter()
        float(train(images, labels)["loss"])
        step_s.append(time.perf_counter() - start)
    return dict(
        kind="step",
        backbone=backbone,
        batch_size=batch_size,
        precision=precision,
        img_s=img_s,
        step_p50_ms=1000 * statistics.median(step_s),
        compile_s=compile_s,
        peak_bytes=peak_device_bytes(),
        pipeline_img_s=pipeline_img_s(batch_size),
        loss=loss,
        finite=math.isfinite(loss),
    )


# --------------------------------------------------------------- training
def plan_epochs(
    steps: Sequence[Mapping], seconds: float, max_epochs: int = 30, train_images: int = FASHION_TRAIN
) -> dict:
    """How many Fashion-MNIST epochs fit in ``seconds``, from the step results (0 if not even one).

    An epoch's estimate takes the float32 step rate (batch 128 if measured, else the first float32 batch; CIFAR
    shapes, more work per image than Fashion-MNIST's 28x28x1, so the estimate errs long) or the input
    pipeline's, whichever is slower, for ``train_images``, and three times that rate for the validation and test
    splits; the first epoch also compiles (`COMPILE_ALLOWANCE_S`).
    """
    rated = [s for s in steps if s.get("precision") == "float32" and s.get("img_s")]
    rated.sort(key=lambda s: s["batch_size"] != 128)
    if not rated:
        return dict(kind="plan", epochs=1, epoch_s_estimate=None, reason="no float32 step measurement to plan from")
    rate = min(rated[0]["img_s"], rated[0]["pipeline_img_s"])
    epoch_s = train_images / rate + FASHION_EVAL / (3 * rate)
    epochs = int((seconds - COMPILE_ALLOWANCE_S) // epoch_s)
    return dict(
        kind="plan",
        epochs=max(0, min(epochs, max_epochs)),
        epoch_s_estimate=epoch_s,
        reason=f"from batch {rated[0]['batch_size']} float32 at {rate:.0f} img/s",
    )


def training_report(run_dir: Path, planned_epochs: int | None = None) -> dict:
    """Seconds per epoch and test top-1 of the last completed epoch of a `mfef train` run (its metrics.csv).

    Seconds per epoch: the median of the epochs after the first (which compiles), or the first if it is alone.
    """
    path = run_dir / "metrics.csv"
    if not path.exists():
        return dict(kind="train", epochs=0, planned_epochs=planned_epochs)
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return dict(kind="train", epochs=0, planned_epochs=planned_epochs)
    times = [float(r["time_s"]) for r in rows]
    last = rows[-1]
    students = [float(v) for k, v in last.items() if k.startswith("test_acc_s") and k[len("test_acc_s") :].isdigit()]
    return dict(
        kind="train",
        epochs=int(last["epoch"]),
        planned_epochs=planned_epochs,
        first_epoch_s=times[0],
        epoch_s=statistics.median(times[1:] or times),
        test_top1_best_student=100 * max(students),
        test_top1_fused=100 * float(last["test_acc_fused"]) if last.get("test_acc_fused") else None,
        test_top1_ensemble=100 * float(last["test_acc_ensemble"]) if last.get("test_acc_ensemble") else None,
    )


# ------------------------------------------------------------------ table
def _cell(value, spec: str = "", suffix: str = "") -> str:
    return "-" if value is None else f"{format(value, spec)}{suffix}"


def _step_row(s: Mapping) -> list[str]:
    """A step measurement's cells; one that failed or was skipped gives its reason in the notes."""
    if s.get("error"):
        setting = [str(s.get("batch_size", "-")), s.get("precision", "-")]
        return [f"MFEF step, 2 x {s.get('backbone', 'resnet32')}", *setting, "-", "-", "-", "-", s["error"]]
    peak = None if s.get("peak_bytes") is None else s["peak_bytes"] / 2**30
    keeps_up = "yes" if s["pipeline_img_s"] >= s["img_s"] else "no"
    return [
        f"MFEF step, 2 x {s['backbone']}",
        str(s["batch_size"]),
        s["precision"],
        _cell(s["img_s"], ".0f"),
        _cell(s["step_p50_ms"], ".1f"),
        _cell(peak, ".2f", " GiB"),
        f"{s['pipeline_img_s']:.0f} ({keeps_up})",
        _cell(s["compile_s"], ".0f", " s compile"),
    ]


def _train_row(t: Mapping, backbone: str) -> list[str]:
    name = f"mfef train fashion_mnist, 2 x {backbone}"
    if not t.get("epochs"):
        return [name, "128", "float32", "-", "-", "-", "-", t.get("error", "no epoch completed")]
    planned = t.get("planned_epochs")
    epochs = f"{t['epochs']}" + (f" of {planned}" if planned and planned != t["epochs"] else "")
    epochs += " epoch" if (planned or t["epochs"]) == 1 else " epochs"
    accuracy = f"test top-1 {t['test_top1_best_student']:.2f} % (best student)"
    if t.get("test_top1_fused") is not None:
        accuracy += f", fused {t['test_top1_fused']:.2f} %"
    # Why a run ended before its planned epochs (the time guard, a failure): what it did finish still counts.
    ended = f"; {t['error']}" if t.get("error") else ""
    return [
        name,
        "128",
        "float32",
        "-",
        "-",
        "-",
        "-",
        f"{t['epoch_s']:.1f} s/epoch (first {t['first_epoch_s']:.0f} s), {epochs}, {accuracy}{ended}",
    ]


TABLE_HEADER = [
    "measurement",
    "batch",
    "precision",
    "img/s",
    "step p50 ms",
    "peak GPU memory",
    "pipeline img/s (keeps up)",
    "notes",
]


def render_table(results: Sequence[Mapping], train_backbone: str = "resnet20") -> str:
    """The check's one markdown table: a row per step measurement (skipped ones say why), then the training row."""
    lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    for result in results:
        if result.get("kind") == "step":
            lines.append("| " + " | ".join(_step_row(result)) + " |")
    trains = [r for r in results if r.get("kind") == "train"]
    if trains:
        lines.append("| " + " | ".join(_train_row(trains[-1], train_backbone)) + " |")
    return "\n".join(lines)


def header_lines(results: Sequence[Mapping]) -> list[str]:
    """What ran where: the device, the versions and the budget, above the table."""
    env = next((r for r in results if r.get("kind") == "env"), None)
    if env is None:
        return ["environment: not recorded"]
    return [
        f"device: {env['device_kind']} ({env['jax_backend']}; {', '.join(env['devices'])})",
        f"versions: Python {env['python']}, JAX {env['jax']}, Keras {env['keras']} ({env['keras_backend']}), "
        f"numpy {env['numpy']}, mfef-keras {env['mfef_keras']}",
    ]


# --------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("env")
    step = sub.add_parser("step")
    step.add_argument("--batch-size", type=int, required=True)
    step.add_argument("--precision", choices=("float32", "mixed_bfloat16"), required=True)
    step.add_argument("--backbone", default="resnet32")
    step.add_argument("--steps", type=int, default=20)
    plan = sub.add_parser("plan")
    plan.add_argument("--results", type=Path, required=True)
    plan.add_argument("--seconds", type=float, required=True)
    plan.add_argument("--max-epochs", type=int, default=30)
    plan.add_argument("--train-images", type=int, default=FASHION_TRAIN)
    report = sub.add_parser("train-report")
    report.add_argument("--run-dir", type=Path, required=True)
    report.add_argument("--planned-epochs", type=int)
    table = sub.add_parser("table")
    table.add_argument("--results", type=Path, required=True)
    table.add_argument("--train-backbone", default="resnet20")
    table.add_argument("--title", default="")
    args = parser.parse_args(argv)

    if args.command == "env":
        emit(environment())
    elif args.command == "step":
        emit(measure_step(args.backbone, args.batch_size, args.precision, args.steps))
    elif args.command == "plan":
        emit(plan_epochs(_results_in(args.results), args.seconds, args.max_epochs, args.train_images))
    elif args.command == "train-report":
        emit(training_report(args.run_dir, args.planned_epochs))
    else:
        results = _results_in(args.results)
        print(
            "\n".join(
                ([args.title, ""] if args.title else [])
                + header_lines(results)
                + ["", render_table(results, args.train_backbone)]
            )
        )
    return 0


def _results_in(folder: Path) -> list[dict]:
    """Every result line of every ``*.log`` in ``folder``, in file-name order."""
    return [r for path in sorted(folder.glob("*.log")) for r in read_results(path.read_text(errors="replace"))]


if __name__ == "__main__":
    sys.exit(main())
