"""Training throughput of `OnlineDistiller` against a plain PyTorch eager implementation of the same step.

Each configuration is two ResNet-32 students with the fusion path and FFL's full loss, the recipe's two SGD
optimisers (momentum 0.9, Nesterov, lr 0.1, L2 1e-4 students / 1e-5 fusion path), batch 128 of random
CIFAR-100-shaped data (32x32x3, 100 classes), fp32. Configurations: ``mfef/independent``,
``mfef/shared_trunk`` and ``ffl/independent`` (FFL's plain fusion module). The PyTorch side is
`torch_reference.TorchDistiller`, beside this script; torch is needed for it and for ``--check`` only.

Every measurement is a fresh process (``--worker``): it builds the model, runs ``--warmup`` steps (the first
traces the Keras step), then times ``--steps`` steps. The Keras side runs the distiller's own
``train_function`` on a repeated in-memory `tf.data` iterator, exactly what `fit` calls per step (forward,
losses, gradients, both optimisers, metric trackers). The figure kept per configuration and framework is the
median over ``--repeats`` processes; the runs alternate Keras / PyTorch so that drift in the machine's load
hits both alike.

Run from the repository root (about 10 minutes on 2 quiet cores; ``--quick`` about 3)::

    python benchmarks/train_throughput.py
    python benchmarks/train_throughput.py --quick --configs mfef/independent
    python benchmarks/train_throughput.py --check      # agreement of the two implementations only
    python benchmarks/train_throughput.py --device gpu --precision mixed_bfloat16 --jit

It prints each worker's figures as it goes, then a table: per configuration, img/s of each framework, their
ratio (Keras / PyTorch), the fraction of the machine's matrix-multiply peak that each reaches (the peak is
measured in the same run: 2048x2048 float32 matmuls in numpy and torch, the faster counts; training FLOPs
per image are 3x the forward pass's conv and dense multiply-adds x2, counted from each framework's graph)
and the median peak resident memory of the worker processes (ru_maxrss). Last come the loss-agreement
lines (the first configuration only; ``--check`` does every one in ``--configs``): the Keras weights are
copied into the PyTorch model, both take two training steps on the same batch, and every loss term and
every updated weight is compared (see `torch_reference.compare_one_step`), at the benchmark's size, where a
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
import time
from pathlib import Path

CONFIGS = ("mfef/independent", "mfef/shared_trunk", "ffl/independent")
FRAMEWORKS = ("keras", "torch")
BACKBONE, DEPTH, NUM_CLASSES, IMAGE_SHAPE = "resnet32", 32, 100, (32, 32, 3)
# The recipe's 391 steps per epoch: the step counter, LR schedule and KD ramp-up as in training.
STEPS_PER_EPOCH = 391
RESULT_PREFIX = "RESULT "
TOLERANCE = 1e-4
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
    parser.add_argument("--worker", choices=("keras", "torch", "peak", "check"), help=argparse.SUPPRESS)
    parser.add_argument("--config", choices=CONFIGS, help=argparse.SUPPRESS)
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
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    if args.device == "cpu":
        tf.config.set_visible_devices([], "GPU")
    elif not tf.config.list_physical_devices("GPU"):
        raise RuntimeError("--device gpu, but TensorFlow sees no GPU.")
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
    import torch
    from torch_reference import TorchDistiller, Trainer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    method, topology = args.config.split("/")
    if args.device == "gpu" and not torch.cuda.is_available():
        raise RuntimeError("--device gpu, but PyTorch sees no GPU.")
    device = torch.device("cuda" if args.device == "gpu" else "cpu")
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


def peak_worker(args: argparse.Namespace) -> dict:
    """Matrix-multiply peak in GFLOP/s: best of 5 rounds of 10 products of 2048x2048 matrices.

    float32 in numpy (CPU) and torch; with ``--precision mixed_bfloat16``, bfloat16 in torch only.
    """
    import numpy as np

    n, products = 2048, 10
    flop = 2 * n**3 * products
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype("float32") for _ in range(2))
    result = {}

    def best(run) -> float:
        run()
        times = []
        for _ in range(5):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return flop / min(times) / 1e9

    if args.device == "cpu" and args.precision == "float32":
        result["numpy"] = best(lambda: [a @ b for _ in range(products)])
    try:
        import torch
    except ImportError:
        return result
    torch.set_num_threads(args.threads)
    device = "cuda" if args.device == "gpu" else "cpu"
    dtype = torch.bfloat16 if args.precision == "mixed_bfloat16" else torch.float32
    ta, tb = (torch.from_numpy(m).to(device, dtype) for m in (a, b))

    def torch_products():
        for _ in range(products):
            ta @ tb
        if device == "cuda":
            torch.cuda.synchronize()

    result["torch"] = best(torch_products)
    return result


def check_worker(args: argparse.Namespace) -> dict:
    """Compare Keras and PyTorch over two training steps from the same weights, for each configuration.

    At the benchmark's size with a float64 PyTorch run as the yardstick for fp32 rounding, and on a small
    model (ResNet-8, width 4, batch 8) where rounding is negligible and every number must agree.
    """
    from torch_reference import compare_one_step

    out = {}
    for name in args.configs:
        method, topology = name.split("/")
        full = compare_one_step(BACKBONE, NUM_CLASSES, topology, method, args.batch_size, float64_reference=True)
        small = compare_one_step("resnet8", 10, topology, method, batch_size=8, base_width=4)
        out[name] = dict(
            lines=full.lines(),
            first_step_term_rel_diff=full.first_step_term_rel_diff,
            updates=[(s.update_rel_diff, s.keras_vs_fp64, s.torch_vs_fp64) for s in full.steps],
            small_term_rel_diff=small.max_term_rel_diff,
            small_update_rel_diff=small.max_update_rel_diff,
        )
    return out


WORKERS = {"keras": keras_worker, "torch": torch_worker, "peak": peak_worker, "check": check_worker}


# ------------------------------------------------------------- orchestrator
def _run_worker(args: argparse.Namespace, worker: str, config: str | None = None) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", worker]
    command += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size)]
    command += ["--threads", str(args.threads), "--device", args.device, "--precision", args.precision]
    command += ["--configs", ",".join(args.configs)] + (["--jit"] if args.jit else [])
    command += ["--torch-channels-last"] if args.torch_channels_last else []
    command += ["--config", config] if config else []
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
    peak = _run_worker(args, "peak")
    peak_gflops = max(peak.values())
    dtype = "bfloat16" if args.precision == "mixed_bfloat16" else "float32"
    print(f"{dtype} matmul peak GFLOP/s: " + ", ".join(f"{k} {v:.0f}" for k, v in peak.items()), flush=True)

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
    for config in args.configs:
        row = {}
        for framework in FRAMEWORKS:
            results = runs.get((config, framework))
            if not results:
                row[framework] = (None, None, None, None)
                continue
            img_s = statistics.median(r["img_s"] for r in results)
            gflop = results[0]["train_gflop_per_image"]
            percent = 100 * img_s * gflop / peak_gflops
            row[framework] = (img_s, percent, statistics.median(r["rss_mb"] for r in results), gflop)
        keras_row, torch_row = row["keras"], row["torch"]
        ratio = keras_row[0] / torch_row[0] if keras_row[0] and torch_row[0] else None
        gflop = keras_row[3] or torch_row[3]
        print(
            f"{config:<20}{_fmt(keras_row[0], '.1f'):>12}{_fmt(torch_row[0], '.1f'):>13}{_fmt(ratio, '.2f'):>7}"
            f"{_fmt(keras_row[1], '.1f'):>13}{_fmt(torch_row[1], '.1f'):>13}{_fmt(keras_row[2], '.0f'):>14}"
            f"{_fmt(torch_row[2], '.0f'):>14}{_fmt(gflop, '.3f'):>11}"
        )
        if keras_row[3] and torch_row[3] and abs(keras_row[3] - torch_row[3]) > 0.01 * keras_row[3]:
            print(f"  note: FLOP counts differ: keras {keras_row[3]:.4f}, torch {torch_row[3]:.4f} GFLOP/img")
    print(f"%peak: img/s x training GFLOP/img / matmul peak ({peak_gflops:.0f} GFLOP/s, measured above)")
    if args.skip_check:
        return 0
    # One configuration keeps the run short; --check alone compares every configuration in --configs.
    return report_check(argparse.Namespace(**{**vars(args), "configs": args.configs[:1]}))


def report_check(args: argparse.Namespace) -> int:
    """Run the Keras vs PyTorch comparison in a fresh process and print it; non-zero exit if it fails."""
    results = _run_worker(args, "check")
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
        _emit(WORKERS[args.worker](args))
        return 0
    if args.check:
        return report_check(args)
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
