"""Training throughput of `OnlineDistiller` against a plain PyTorch eager implementation of the same step.

Each configuration is two ResNet-32 students with the fusion path and FFL's full loss, the recipe's two SGD
optimisers (momentum 0.9, Nesterov, lr 0.1, L2 1e-4 students / 1e-5 fusion path), batch 128 of random
CIFAR-100-shaped data (32x32x3, 100 classes), fp32. Configurations: ``mfef/independent``,
``mfef/shared_trunk`` and ``ffl/independent`` (FFL's plain fusion module). The PyTorch side is
`torch_reference.TorchDistiller`, beside this script; torch is needed for it and for ``--check`` only.
Install the CPU build of torch with ``pip install torch --index-url https://download.pytorch.org/whl/cpu``
(a plain ``pip install torch`` brings the CUDA build on Linux, gigabytes; on this project's machines
``pip install torch==2.13.0`` takes the local CPU wheel).

TensorFlow and torch never share a process: the CUDA builds of the two crash together (a segfault, exit -11,
no message). Every measurement is a fresh process of one framework (``--worker``): it builds the model, runs
``--warmup`` steps (the first traces the Keras step), then times ``--steps`` steps. The Keras side runs the
distiller's own ``train_function`` on a repeated in-memory `tf.data` iterator, exactly what `fit` calls per
step (forward, losses, gradients, both optimisers, metric trackers). The figure kept per configuration and
framework is the median over ``--repeats`` processes; the runs alternate Keras / PyTorch so that drift in the
machine's load hits both alike.

Run from the repository root (about 10 minutes on 2 quiet cores; ``--quick`` about 3)::

    python benchmarks/train_throughput.py
    python benchmarks/train_throughput.py --quick --configs mfef/independent
    python benchmarks/train_throughput.py --check      # agreement of the two implementations only
    python benchmarks/train_throughput.py --device gpu --precision mixed_bfloat16 --jit

It prints each worker's figures as it goes, then a table: per configuration, img/s of each framework, their
ratio (Keras / PyTorch), the fraction of the machine's matrix-multiply peak that each reaches, and the
median peak resident memory of the worker processes (ru_maxrss). The peak is measured in the same run with
the step's threads and kernels: square matmuls of several sizes in TensorFlow (and numpy) and in torch, each
in its own process with the same thread settings as the steps, the best of all counts. Training FLOPs per
image are 3x the forward pass's conv and dense multiply-adds x2, counted from each framework's graph; they
are nominal, so a convolution algorithm that multiplies less (Winograd) or a disturbed peak measurement
could put a step above the "peak": then ``n/a`` is printed, with a note, never a fraction above 100 %.

Last come the loss-agreement lines (the first configuration only; ``--check`` does every one in
``--configs``): a Keras process trains two steps on one batch and saves the initial weights, the batch, the
loss terms and the updated weights to an .npz in a temporary directory (`keras_steps.record_keras_steps`);
a torch process loads the initial weights into the PyTorch model, takes the same two steps and compares
every loss term and every updated weight (`torch_reference.compare_steps`), at the benchmark's size, where a
float64 PyTorch run gives the fp32 rounding floor, and on a small ResNet-8, where all must agree within
1e-4. The exit status is non-zero if they do not.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

CONFIGS = ("mfef/independent", "mfef/shared_trunk", "ffl/independent")
FRAMEWORKS = ("keras", "torch")
BACKBONE, DEPTH, NUM_CLASSES, IMAGE_SHAPE = "resnet32", 32, 100, (32, 32, 3)
# The recipe's 391 steps per epoch: the step counter, LR schedule and KD ramp-up as in training.
STEPS_PER_EPOCH = 391
RESULT_PREFIX = "RESULT "
TOLERANCE = 1e-4
# Square matmul sizes of the peak measurement: the best of them counts.
PEAK_SIZES = {"cpu": (512, 1024, 2048), "gpu": (2048, 4096, 8192)}
HERE = Path(__file__).resolve().parent


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per process (default 30)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first, tracing included (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per measurement (default 3)")
    parser.add_argument("--quick", action="store_true", help="10 steps, 2 warm-up, 1 repeat")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list of {', '.join(CONFIGS)}")
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="comma list of keras, torch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=_cores(), help="intra/inter-op threads (default: cores)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument(
        "--precision",
        choices=("float32", "mixed_bfloat16"),
        default="float32",
        help="Keras dtype policy; PyTorch runs its forward under bfloat16 autocast to match",
    )
    parser.add_argument("--jit", action="store_true", help="compile the Keras step with XLA")
    parser.add_argument(
        "--torch-channels-last", action="store_true", help="PyTorch in channels-last memory format (default NCHW)"
    )
    parser.add_argument("--check", action="store_true", help="only compare the two implementations")
    parser.add_argument("--skip-check", action="store_true", help="do not compare the implementations")
    parser.add_argument("--worker", choices=tuple(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--config", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--record-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.repeats = 10, 2, 1
    args.configs = [c for c in args.configs.split(",") if c]
    args.frameworks = [f for f in args.frameworks.split(",") if f]
    for name in args.configs:
        if name not in CONFIGS:
            parser.error(f"unknown config {name!r}; choose from {', '.join(CONFIGS)}")
    for name in args.frameworks:
        if name not in FRAMEWORKS:
            parser.error(f"unknown framework {name!r}; choose from {', '.join(FRAMEWORKS)}")
    if args.steps < 1 or args.warmup < 1 or args.repeats < 1:
        parser.error("--steps, --warmup and --repeats must be >= 1")
    return args


def _emit(result: dict) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def _random_batch(batch_size: int):
    import numpy as np

    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch_size, *IMAGE_SHAPE)).astype("float32")
    return images, rng.integers(0, NUM_CLASSES, batch_size).astype("int32")


# ------------------------------------------------------------------ workers
def _setup_tensorflow(args: argparse.Namespace):
    """Import TensorFlow with the benchmark's threads and device; every Keras-side worker starts here."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    if args.device == "cpu":
        tf.config.set_visible_devices([], "GPU")
    elif not tf.config.list_physical_devices("GPU"):
        raise RuntimeError("--device gpu, but TensorFlow sees no GPU.")
    return tf


def _setup_torch(args: argparse.Namespace):
    """Import torch with the benchmark's threads; returns it and the device. Every torch worker starts here."""
    import torch

    torch.set_num_threads(args.threads)
    if args.device == "gpu" and not torch.cuda.is_available():
        raise RuntimeError("--device gpu, but PyTorch sees no GPU.")
    return torch, torch.device("cuda" if args.device == "gpu" else "cpu")


def _time_steps(step, args: argparse.Namespace, build_s: float, train_gflop_per_image: float) -> dict:
    """Warm ``step`` up, then time ``args.steps`` calls; reading the last loss waits for the device."""
    warmup_s = []
    for _ in range(args.warmup):
        start = time.perf_counter()
        float(step()["loss"])
        warmup_s.append(time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(args.steps):
        logs = step()
    loss = float(logs["loss"])
    elapsed = time.perf_counter() - start
    return dict(
        img_s=args.steps * args.batch_size / elapsed,
        step_s=elapsed / args.steps,
        first_step_s=warmup_s[0],
        build_s=build_s,
        rss_mb=_peak_rss_mb(),
        loss=loss,
        train_gflop_per_image=train_gflop_per_image,
    )


def keras_worker(args: argparse.Namespace) -> dict:
    """Build the distiller as a user would, warm up its train_function, then time it."""
    tf = _setup_tensorflow(args)
    import keras

    from mfef_keras.distill import OnlineDistiller
    from mfef_keras.models import build_students

    method, topology = args.config.split("/")
    if args.precision != "float32":
        keras.mixed_precision.set_global_policy(args.precision)
    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    distiller = OnlineDistiller(build_students(BACKBONE, NUM_CLASSES, 2, topology), method)
    distiller.compile(jit_compile=args.jit)
    distiller.prepare(steps_per_epoch=STEPS_PER_EPOCH)
    iterator = iter(tf.data.Dataset.from_tensors(_random_batch(args.batch_size)).repeat())
    distiller.make_train_function()
    build_s = time.perf_counter() - start

    return _time_steps(
        lambda: distiller.train_function(iterator), args, build_s, 3 * _keras_forward_flops(distiller) / 1e9
    )


def _keras_forward_flops(distiller) -> float:
    """Multiply-adds x2 of every Conv2D, depthwise conv and MatMul in the traced forward pass, per image."""
    import numpy as np
    import tensorflow as tf

    forward = tf.function(lambda x: distiller(x, training=False))
    graph = forward.get_concrete_function(tf.TensorSpec((1, *IMAGE_SHAPE), tf.float32)).graph
    total = 0.0
    for op in graph.get_operations():
        out = np.prod(op.outputs[0].shape.as_list()) if op.outputs else 0
        if op.type == "Conv2D":
            kh, kw, cin, _ = op.inputs[1].shape.as_list()
            total += 2 * out * kh * kw * cin
        elif op.type == "DepthwiseConv2dNative":
            kh, kw, _, _ = op.inputs[1].shape.as_list()
            total += 2 * out * kh * kw
        elif op.type == "MatMul":
            a = op.inputs[0].shape.as_list()
            total += 2 * out * (a[0] if op.get_attr("transpose_a") else a[1])
    return total


def torch_worker(args: argparse.Namespace) -> dict:
    """Build the PyTorch reference, warm up, then time its training step."""
    torch, device = _setup_torch(args)
    from torch_reference import TorchDistiller, Trainer

    torch.manual_seed(0)
    method, topology = args.config.split("/")
    start = time.perf_counter()
    memory_format = torch.channels_last if args.torch_channels_last else torch.contiguous_format
    model = TorchDistiller(DEPTH, NUM_CLASSES, 2, topology, method).to(device, memory_format=memory_format).train()
    autocast = None
    if args.precision == "mixed_bfloat16":

        def autocast():
            return torch.autocast(device.type, dtype=torch.bfloat16)

    trainer = Trainer(model, steps_per_epoch=STEPS_PER_EPOCH, autocast=autocast)
    images, labels = _random_batch(args.batch_size)
    images = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).contiguous(memory_format=memory_format)
    labels = torch.from_numpy(labels.astype("int64"))
    build_s = time.perf_counter() - start

    def step() -> dict:
        # The batch goes host -> device each step, as it does for Keras's tf.data iterator.
        return trainer.step(images.to(device, non_blocking=True), labels.to(device, non_blocking=True))

    return _time_steps(step, args, build_s, 3 * _torch_forward_flops(model, device) / 1e9)


def _torch_forward_flops(model, device) -> float:
    """Multiply-adds x2 of every convolution and linear layer of one forward pass, per image."""
    import torch
    from torch import nn

    total = 0.0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += 2 * output.numel() * module.in_channels // module.groups * kh * kw
        else:
            total += 2 * output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    model.eval()
    with torch.no_grad():
        model(torch.zeros((2, IMAGE_SHAPE[2], *IMAGE_SHAPE[:2]), device=device))
    model.train()
    for hook in hooks:
        hook.remove()
    return total / 2


def _gemm_gflops(product_for: Callable[[int], Callable[[], object]], sizes: Sequence[int], rounds: int = 5) -> float:
    """Best GFLOP/s over ``sizes`` and ``rounds`` of square matmuls.

    Args:
        product_for: given ``n``, a function that multiplies two n x n matrices and waits for the result.
        sizes: the ``n`` to try.
        rounds: timed rounds per size, each at least ~0.2 s of products, after one untimed product.
    """
    best = 0.0
    for n in sizes:
        product = product_for(n)
        start = time.perf_counter()
        product()  # also allocation and kernel selection: only sizes the round's length
        calls = max(1, round(0.2 / (time.perf_counter() - start)))
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(calls):
                product()
            best = max(best, 2 * n**3 * calls / (time.perf_counter() - start) / 1e9)
    return best


def _peak_matrices(n: int) -> list:
    """Two random float32 n x n numpy matrices, the same in every framework."""
    import numpy as np

    rng = np.random.default_rng(0)
    return [rng.standard_normal((n, n)).astype("float32") for _ in range(2)]


def keras_peak_worker(args: argparse.Namespace) -> dict:
    """Matmul peak in GFLOP/s of TensorFlow (and of numpy on CPU in float32), with the Keras step's threads.

    In the step's dtype: bfloat16 with ``--precision mixed_bfloat16``; numpy has none, so it only runs in float32.
    """
    tf = _setup_tensorflow(args)
    dtype = tf.bfloat16 if args.precision == "mixed_bfloat16" else tf.float32
    sizes = PEAK_SIZES[args.device]

    def tensorflow_product(n: int) -> Callable[[], object]:
        a, b = (tf.cast(m, dtype) for m in _peak_matrices(n))
        # Eager ops on the CPU return once computed; on a GPU they only queue.
        sync = tf.test.experimental.sync_devices if args.device == "gpu" else lambda: None
        return lambda: (tf.linalg.matmul(a, b), sync())

    result = {"tensorflow": _gemm_gflops(tensorflow_product, sizes)}
    if args.device == "cpu" and args.precision == "float32":

        def numpy_product(n: int) -> Callable[[], object]:
            a, b = _peak_matrices(n)
            return lambda: a @ b

        result["numpy"] = _gemm_gflops(numpy_product, sizes)
    return result


def torch_peak_worker(args: argparse.Namespace) -> dict:
    """Matmul peak in GFLOP/s of torch in the step's dtype, with the PyTorch step's threads."""
    torch, device = _setup_torch(args)
    dtype = torch.bfloat16 if args.precision == "mixed_bfloat16" else torch.float32

    def torch_product(n: int) -> Callable[[], object]:
        a, b = (torch.from_numpy(m).to(device, dtype) for m in _peak_matrices(n))
        sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
        return lambda: (a @ b, sync())

    return {"torch": _gemm_gflops(torch_product, PEAK_SIZES[args.device])}


def _record_path(record_dir: Path, config: str, size: str) -> Path:
    return record_dir / f"{config.replace('/', '-')}-{size}.npz"


def _check_runs(config: str, batch_size: int) -> dict[str, dict]:
    """`record_keras_steps` arguments of the two runs compared per configuration.

    Args:
        config: ``method/topology``.
        batch_size: the benchmark's batch, for the run at its size; the small model (ResNet-8, width 4, batch 8)
            is the other, where rounding is negligible and every number must agree.
    """
    method, topology = config.split("/")
    common = dict(topology=topology, method=method)
    return {
        "full": dict(backbone=BACKBONE, num_classes=NUM_CLASSES, batch_size=batch_size, **common),
        "small": dict(backbone="resnet8", num_classes=10, batch_size=8, base_width=4, **common),
    }


def keras_check_worker(args: argparse.Namespace) -> dict:
    """Run two Keras training steps for each configuration and save them to ``--record-dir`` for the torch side."""
    _setup_tensorflow(args)
    from keras_steps import record_keras_steps

    for config in args.configs:
        for size, kwargs in _check_runs(config, args.batch_size).items():
            record_keras_steps(**kwargs).save(_record_path(args.record_dir, config, size))
    return {}


def torch_check_worker(args: argparse.Namespace) -> dict:
    """Replay the Keras steps saved in ``--record-dir`` in PyTorch and compare, for each configuration.

    At the benchmark's size with a float64 PyTorch run as the yardstick for fp32 rounding, and on the small model.
    """
    _setup_torch(args)
    from keras_steps import KerasSteps
    from torch_reference import compare_steps

    out = {}
    for config in args.configs:
        full, small = (
            compare_steps(KerasSteps.load(_record_path(args.record_dir, config, size)), float64_reference=fp64)
            for size, fp64 in (("full", True), ("small", False))
        )
        out[config] = dict(
            lines=full.lines(),
            first_step_term_rel_diff=full.first_step_term_rel_diff,
            updates=[(s.update_rel_diff, s.keras_vs_fp64, s.torch_vs_fp64) for s in full.steps],
            small_term_rel_diff=small.max_term_rel_diff,
            small_update_rel_diff=small.max_update_rel_diff,
        )
    return out


WORKERS = {
    "keras": keras_worker,
    "torch": torch_worker,
    "keras-peak": keras_peak_worker,
    "torch-peak": torch_peak_worker,
    "keras-check": keras_check_worker,
    "torch-check": torch_check_worker,
}


# ------------------------------------------------------------- orchestrator
def _run_worker(
    args: argparse.Namespace, worker: str, config: str | None = None, record_dir: Path | None = None
) -> dict:
    """Run ``worker`` in a fresh process (one framework only) and return what it emitted."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", worker]
    command += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size)]
    command += ["--threads", str(args.threads), "--device", args.device, "--precision", args.precision]
    command += ["--configs", ",".join(args.configs)] + (["--jit"] if args.jit else [])
    command += ["--torch-channels-last"] if args.torch_channels_last else []
    command += ["--config", config] if config else []
    command += ["--record-dir", str(record_dir)] if record_dir else []
    threads = str(args.threads)
    env = dict(
        os.environ,
        KERAS_BACKEND="tensorflow",
        TF_CPP_MIN_LOG_LEVEL="2",
        OMP_NUM_THREADS=threads,
        OPENBLAS_NUM_THREADS=threads,
        MKL_NUM_THREADS=threads,
    )
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=HERE.parent)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode or not lines:
        raise RuntimeError(
            f"worker {worker} {config or ''} failed (exit {done.returncode}):\n"
            f"{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def orchestrate(args: argparse.Namespace) -> int:
    print(
        f"{BACKBONE} x2, batch {args.batch_size}, {args.precision}, device {args.device}, {args.threads} threads, "
        f"{args.warmup} warm-up + {args.steps} timed steps, median of {args.repeats} processes"
        + (", Keras with XLA" if args.jit else "")
        + (", PyTorch channels-last" if args.torch_channels_last else ""),
        flush=True,
    )
    peak = {k: v for framework in args.frameworks for k, v in _run_worker(args, f"{framework}-peak").items()}
    peak_gflops = max(peak.values())
    dtype = "bfloat16" if args.precision == "mixed_bfloat16" else "float32"
    sizes = ", ".join(map(str, PEAK_SIZES[args.device]))
    print(
        f"{dtype} matmul peak GFLOP/s (sizes {sizes}, {args.threads} threads): "
        + ", ".join(f"{k} {v:.0f}" for k, v in peak.items()),
        flush=True,
    )

    runs: dict[tuple[str, str], list[dict]] = {}
    for config in args.configs:
        for repeat in range(args.repeats):
            for framework in args.frameworks:
                result = _run_worker(args, framework, config)
                runs.setdefault((config, framework), []).append(result)
                print(
                    f"  {config:<18} {framework:<5} run {repeat + 1}/{args.repeats}: {result['img_s']:7.1f} img/s "
                    f"(step {result['step_s']:.3f} s, first step {result['first_step_s']:.1f} s, "
                    f"build {result['build_s']:.1f} s, RSS {result['rss_mb']:.0f} MB, "
                    f"{result['train_gflop_per_image']:.3f} GFLOP/img)",
                    flush=True,
                )

    header = (
        f"{'config':<20}{'keras img/s':>12}{'torch img/s':>13}{'ratio':>7}{'keras %peak':>13}{'torch %peak':>13}"
        f"{'keras RSS MB':>14}{'torch RSS MB':>14}{'GFLOP/img':>11}"
    )
    print("\n" + header)
    above_peak = False
    for config in args.configs:
        row = {}
        for framework in FRAMEWORKS:
            results = runs.get((config, framework))
            if not results:
                row[framework] = (None, "-", None, None)
                continue
            img_s = statistics.median(r["img_s"] for r in results)
            gflop = results[0]["train_gflop_per_image"]
            percent = 100 * img_s * gflop / peak_gflops
            above_peak = above_peak or percent > 100
            rss = statistics.median(r["rss_mb"] for r in results)
            row[framework] = (img_s, "n/a" if percent > 100 else f"{percent:.1f}", rss, gflop)
        keras_row, torch_row = row["keras"], row["torch"]
        ratio = keras_row[0] / torch_row[0] if keras_row[0] and torch_row[0] else None
        gflop = keras_row[3] or torch_row[3]
        print(
            f"{config:<20}{_fmt(keras_row[0], '.1f'):>12}{_fmt(torch_row[0], '.1f'):>13}{_fmt(ratio, '.2f'):>7}"
            f"{keras_row[1]:>13}{torch_row[1]:>13}{_fmt(keras_row[2], '.0f'):>14}"
            f"{_fmt(torch_row[2], '.0f'):>14}{_fmt(gflop, '.3f'):>11}"
        )
        if keras_row[3] and torch_row[3] and abs(keras_row[3] - torch_row[3]) > 0.01 * keras_row[3]:
            print(f"  note: FLOP counts differ: keras {keras_row[3]:.4f}, torch {torch_row[3]:.4f} GFLOP/img")
    print(f"%peak: img/s x training GFLOP/img / matmul peak ({peak_gflops:.0f} GFLOP/s, measured above)")
    if above_peak:
        print(
            "  n/a: the step's nominal FLOP rate is above the measured matmul peak, so that peak is no bound here: "
            "a convolution algorithm that multiplies less than counted (Winograd), or a peak measurement "
            "disturbed by other load on the machine"
        )
    if args.skip_check:
        return 0
    # One configuration keeps the run short; --check alone compares every configuration in --configs.
    return report_check(argparse.Namespace(**{**vars(args), "configs": args.configs[:1]}))


def report_check(args: argparse.Namespace) -> int:
    """Run the Keras vs PyTorch comparison and print it; non-zero exit if it fails.

    Two processes: the Keras one saves its steps to a temporary directory, the torch one replays and compares.
    """
    with tempfile.TemporaryDirectory(prefix="mfef-check-") as record_dir:
        _run_worker(args, "keras-check", record_dir=Path(record_dir))
        results = _run_worker(args, "torch-check", record_dir=Path(record_dir))
    ok = True
    for config, r in results.items():
        for line in r["lines"]:
            print(f"  {config}: {line}")
        full_ok = r["first_step_term_rel_diff"] <= TOLERANCE
        small_ok = max(r["small_term_rel_diff"], r["small_update_rel_diff"]) <= TOLERANCE
        ok = ok and full_ok and small_ok
        updates = " / ".join(f"{k:.1e} (float64: keras {k64:.1e}, torch {t64:.1e})" for k, k64, t64 in r["updates"])
        print(
            f"loss agreement {config}: {BACKBONE} batch {args.batch_size}: every loss term within "
            f"{r['first_step_term_rel_diff']:.1e} relative from the same weights (tolerance {TOLERANCE:.0e}): "
            f"{'OK' if full_ok else 'FAILED'}; weight updates keras vs torch, steps 1 / 2: {updates}\n"
            f"loss agreement {config}: resnet8 width 4 batch 8, 2 steps: loss terms within "
            f"{r['small_term_rel_diff']:.1e}, weight updates within {r['small_update_rel_diff']:.1e} relative "
            f"(tolerance {TOLERANCE:.0e}): {'OK' if small_ok else 'FAILED'}"
        )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        result = WORKERS[args.worker](args)
        # The invariant the CUDA builds need; the CPU builds would hide a breach until someone has CUDA ones.
        if {"tensorflow", "torch"} <= sys.modules.keys():
            raise RuntimeError(f"worker {args.worker} imported both TensorFlow and torch.")
        _emit(result)
        return 0
    if args.check:
        return report_check(args)
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
