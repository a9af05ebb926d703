"""Training throughput of `OnlineDistiller` on TensorFlow and JAX against PyTorch implementations of the same step.

Each configuration is two ResNet-32 students with the fusion path and FFL's full loss, the recipe's two SGD
optimisers (momentum 0.9, Nesterov, lr 0.1, L2 1e-4 students / 1e-5 fusion path), batch 128 of random
CIFAR-100-shaped data (32x32x3, 100 classes). Configurations: ``mfef/independent``, ``mfef/shared_trunk`` and
``ffl/independent`` (FFL's plain fusion module). Precisions (``--precisions``): ``float32`` and
``mixed_bfloat16`` (the Keras dtype policy; PyTorch runs its forward pass under
``torch.autocast(device, dtype=torch.bfloat16)``, the loss and the optimisers in float32 on both sides).

Frameworks (``--frameworks``):

- ``tensorflow``: Keras on TensorFlow, the distiller's own ``train_function`` on a repeated in-memory `tf.data`
  iterator, exactly what `fit` calls per step (forward, losses, gradients, both optimisers, metric trackers);
  ``--jit`` compiles it with XLA.
- ``jax``: Keras on JAX, the distiller's own ``train_function`` (`jax.jit`-compiled) with the state threaded
  and each batch device-put as `fit` does (`jax_step.JaxTrainFunction`).
- ``torch``: `torch_reference.TorchDistiller` in **channels-last** memory format (model and inputs), PyTorch's
  fastest form on the CPU (``torch.compile`` was slower here); the ratios are against it.
- ``torch-nchw``: the same in PyTorch's default NCHW layout, a secondary row.

torch is needed for its rows and for the loss agreement check only. Install its CPU build with
``pip install torch --index-url https://download.pytorch.org/whl/cpu`` (a plain ``pip install torch`` brings
the CUDA build on Linux, gigabytes; on this project's machines ``pip install torch==2.13.0`` takes the local
CPU wheel); JAX's CPU build with ``pip install jax``.

TensorFlow and torch never share a process: the CUDA builds of the two crash together (a segfault, exit -11,
no message). Every measurement is a fresh process of one framework (``--worker``; ``KERAS_BACKEND=jax`` for the
JAX ones): it builds the model, runs ``--warmup`` steps (the first traces and compiles the step), then times
``--steps`` steps. The figure kept per configuration, precision and framework is the median over ``--repeats``
processes; the runs alternate frameworks so that drift in the machine's load hits all alike. JAX's CPU
backend sizes its thread pool from the process's CPU affinity, so with ``--threads`` below the core count the
JAX worker pins itself to that many cores.

Run from the repository root. Everything (3 configurations x 2 precisions x 4 frameworks x 3 processes) takes
about an hour on 2 cores, JAX's CPU step being the slowest; ``--quick --configs mfef/independent`` took 17 minutes
on the 2 cores while they were shared with other work::

    python benchmarks/train_throughput.py
    python benchmarks/train_throughput.py --quick --configs mfef/independent --precisions float32
    python benchmarks/train_throughput.py --check      # agreement of the implementations only
    python benchmarks/train_throughput.py --device gpu --frameworks jax,torch --jit

It prints each worker's figures as it goes, then two markdown tables. The first: per configuration and
precision, img/s of each framework, the ratios of TensorFlow and of JAX to PyTorch channels-last, and the
median peak resident memory of the worker processes (ru_maxrss). The second: training GFLOP per image and
the fraction of the machine's matrix-multiply peak that each framework reaches. The peak is measured in the
same run with the step's threads and kernels, in the step's dtype: square matmuls of several sizes in
TensorFlow (and numpy in float32), JAX and torch, each in its own process, the best of all counts. Training
FLOPs per image are 3x the forward pass's conv and dense multiply-adds x2, counted from each framework's graph
(TensorFlow's traced graph, JAX's jaxpr, torch's module hooks); they are nominal, so a convolution algorithm
that multiplies less (Winograd) or a disturbed peak measurement could put a step above the "peak": then
``n/a`` is printed, with a note, never a fraction above 100 %.

Last come the loss-agreement lines (the first configuration only; ``--check`` does every one in
``--configs``), in float32: a Keras process per Keras backend (TensorFlow, and JAX when ``jax`` is among the
frameworks) trains two steps on one batch and saves the initial weights, the batch, the loss terms and the
updated weights to an .npz in a temporary directory (`keras_steps.record_keras_steps`); a torch process loads
the initial weights into the PyTorch model, takes the same two steps and compares every loss term and every
updated weight (`torch_reference.compare_steps`), at the benchmark's size, where a float64 PyTorch run gives
the fp32 rounding floor, and on a small ResNet-8, where all must agree within 1e-4. The exit status is
non-zero if they do not.
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

CONFIGS = ("mfef/independent", "mfef/shared_trunk", "ffl/independent")
FRAMEWORKS = ("tensorflow", "jax", "torch", "torch-nchw")
PRECISIONS = ("float32", "mixed_bfloat16")
# Column labels; "torch" is PyTorch at its fastest on the CPU, channels-last, and the ratios' denominator.
LABELS = {"tensorflow": "TF", "jax": "JAX", "torch": "torch CL", "torch-nchw": "torch NCHW"}
REFERENCE = "torch"
# Whose matmul peak bounds each framework's step: both torch layouts run on torch's kernels.
PEAK_FAMILY = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch", "torch-nchw": "torch"}
KERAS_BACKENDS = ("tensorflow", "jax")
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


def _comma_list(text: str, allowed: Sequence[str], what: str, parser: argparse.ArgumentParser) -> list[str]:
    items = [item for item in text.split(",") if item]
    for item in items:
        if item not in allowed:
            parser.error(f"unknown {what} {item!r}; choose from {', '.join(allowed)}")
    return items


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per process (default 30)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first, tracing included (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per measurement (default 3)")
    parser.add_argument("--quick", action="store_true", help="10 steps, 2 warm-up, 1 repeat")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list of {', '.join(CONFIGS)}")
    parser.add_argument(
        "--frameworks", default=",".join(FRAMEWORKS), help=f"comma list of {', '.join(FRAMEWORKS)} (default all)"
    )
    parser.add_argument(
        "--precisions",
        default=",".join(PRECISIONS),
        help="comma list of Keras dtype policies, float32 and mixed_bfloat16 (PyTorch: bfloat16 autocast); "
        "default both",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=_cores(), help="intra/inter-op threads (default: cores)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--jit", action="store_true", help="compile the TensorFlow step with XLA (JAX's always is)")
    parser.add_argument("--check", action="store_true", help="only compare the implementations")
    parser.add_argument("--skip-check", action="store_true", help="do not compare the implementations")
    parser.add_argument("--worker", choices=tuple(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--config", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--precision", choices=PRECISIONS, default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--record-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.repeats = 10, 2, 1
    args.configs = _comma_list(args.configs, CONFIGS, "config", parser)
    args.frameworks = _comma_list(args.frameworks, FRAMEWORKS, "framework", parser)
    args.precisions = _comma_list(args.precisions, PRECISIONS, "precision", parser)
    if not (args.configs and args.frameworks and args.precisions):
        parser.error("--configs, --frameworks and --precisions need at least one entry each")
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
    """Import TensorFlow with the benchmark's threads and device; every TensorFlow-side worker starts here."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    if args.device == "cpu":
        tf.config.set_visible_devices([], "GPU")
    elif not tf.config.list_physical_devices("GPU"):
        raise RuntimeError("--device gpu, but TensorFlow sees no GPU.")
    return tf


def _setup_jax(args: argparse.Namespace):
    """Import JAX on the benchmark's device (``JAX_PLATFORMS`` is set by the parent) and cores."""
    if args.device == "cpu" and args.threads < _cores():
        # XLA's CPU thread pool takes one thread per core it may run on.
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.threads])
    # Keras's set_random_seed imports TensorFlow wherever it is installed (to seed tf.data): kept out, so a JAX
    # worker's time and memory are JAX's alone, as on a machine without TensorFlow.
    sys.modules.setdefault("tensorflow", None)
    import jax

    if args.device == "gpu" and jax.default_backend() != "gpu":
        raise RuntimeError(f"--device gpu, but JAX's default backend is {jax.default_backend()!r}.")
    return jax


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


def tensorflow_worker(args: argparse.Namespace) -> dict:
    """Build the distiller as a user would, warm up its train_function on TensorFlow, then time it."""
    tf = _setup_tensorflow(args)
    from jax_step import build_distiller

    start = time.perf_counter()
    distiller = build_distiller(args.config, BACKBONE, NUM_CLASSES, args.precision, STEPS_PER_EPOCH, jit=args.jit)
    iterator = iter(tf.data.Dataset.from_tensors(_random_batch(args.batch_size)).repeat())
    distiller.make_train_function()
    build_s = time.perf_counter() - start

    return _time_steps(
        lambda: distiller.train_function(iterator), args, build_s, 3 * _tensorflow_forward_flops(distiller) / 1e9
    )


def _tensorflow_forward_flops(distiller) -> float:
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


def jax_worker(args: argparse.Namespace) -> dict:
    """Build the distiller on JAX, warm up its jit-compiled train_function as `fit` drives it, then time it."""
    _setup_jax(args)
    from jax_step import JaxTrainFunction, build_distiller, forward_flops_per_image

    start = time.perf_counter()
    distiller = build_distiller(args.config, BACKBONE, NUM_CLASSES, args.precision, STEPS_PER_EPOCH, jit=True)
    # Before the first step: the step donates the variables' buffers, and tracing the forward pass reads them.
    gflop = 3 * forward_flops_per_image(distiller, IMAGE_SHAPE) / 1e9
    train = JaxTrainFunction(distiller)
    images, labels = _random_batch(args.batch_size)
    build_s = time.perf_counter() - start
    return _time_steps(lambda: train(images, labels), args, build_s, gflop)


def torch_worker(args: argparse.Namespace) -> dict:
    """Build the PyTorch reference (channels-last for ``torch``, NCHW for ``torch-nchw``), warm up, time its step."""
    torch, device = _setup_torch(args)
    from torch_reference import TorchDistiller, Trainer

    torch.manual_seed(0)
    method, topology = args.config.split("/")
    start = time.perf_counter()
    memory_format = torch.channels_last if args.worker == "torch" else torch.contiguous_format
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
        # The batch goes host -> device each step, as it does for the Keras iterators.
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


def tensorflow_peak_worker(args: argparse.Namespace) -> dict:
    """Matmul peak in GFLOP/s of TensorFlow (and of numpy on CPU in float32), with the TensorFlow step's threads.

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


def jax_peak_worker(args: argparse.Namespace) -> dict:
    """Matmul peak in GFLOP/s of JAX (jit-compiled) in the step's dtype, on the JAX step's cores."""
    jax = _setup_jax(args)
    import jax.numpy as jnp

    dtype = jnp.bfloat16 if args.precision == "mixed_bfloat16" else jnp.float32
    matmul = jax.jit(jnp.matmul)

    def jax_product(n: int) -> Callable[[], object]:
        a, b = (jnp.asarray(m, dtype) for m in _peak_matrices(n))
        return lambda: matmul(a, b).block_until_ready()

    return {"jax": _gemm_gflops(jax_product, PEAK_SIZES[args.device])}


def torch_peak_worker(args: argparse.Namespace) -> dict:
    """Matmul peak in GFLOP/s of torch in the step's dtype, with the PyTorch step's threads."""
    torch, device = _setup_torch(args)
    dtype = torch.bfloat16 if args.precision == "mixed_bfloat16" else torch.float32

    def torch_product(n: int) -> Callable[[], object]:
        a, b = (torch.from_numpy(m).to(device, dtype) for m in _peak_matrices(n))
        sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
        return lambda: (a @ b, sync())

    return {"torch": _gemm_gflops(torch_product, PEAK_SIZES[args.device])}


def _record_path(record_dir: Path, backend: str, config: str, size: str) -> Path:
    return record_dir / f"{backend}-{config.replace('/', '-')}-{size}.npz"


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


def _record_keras_checks(args: argparse.Namespace, backend: str) -> dict:
    """Run two Keras training steps per configuration on ``backend`` and save them for the torch side."""
    from keras_steps import record_keras_steps

    for config in args.configs:
        for size, kwargs in _check_runs(config, args.batch_size).items():
            record_keras_steps(**kwargs).save(_record_path(args.record_dir, backend, config, size))
    return {}


def tensorflow_check_worker(args: argparse.Namespace) -> dict:
    _setup_tensorflow(args)
    return _record_keras_checks(args, "tensorflow")


def jax_check_worker(args: argparse.Namespace) -> dict:
    _setup_jax(args)
    return _record_keras_checks(args, "jax")


def torch_check_worker(args: argparse.Namespace) -> dict:
    """Replay the Keras steps saved in ``--record-dir`` in PyTorch and compare, per Keras backend and configuration.

    At the benchmark's size with a float64 PyTorch run as the yardstick for fp32 rounding, and on the small model.
    """
    _setup_torch(args)
    from keras_steps import KerasSteps
    from torch_reference import compare_steps

    out = {}
    for backend in KERAS_BACKENDS:
        for config in args.configs:
            if not _record_path(args.record_dir, backend, config, "full").exists():
                continue
            full, small = (
                compare_steps(KerasSteps.load(_record_path(args.record_dir, backend, config, size)), fp64)
                for size, fp64 in (("full", True), ("small", False))
            )
            out[f"{backend} {config}"] = dict(
                lines=full.lines(),
                first_step_term_rel_diff=full.first_step_term_rel_diff,
                updates=[(s.update_rel_diff, s.keras_vs_fp64, s.torch_vs_fp64) for s in full.steps],
                small_term_rel_diff=small.max_term_rel_diff,
                small_update_rel_diff=small.max_update_rel_diff,
            )
    return out


WORKERS = {
    "tensorflow": tensorflow_worker,
    "jax": jax_worker,
    "torch": torch_worker,
    "torch-nchw": torch_worker,
    "tensorflow-peak": tensorflow_peak_worker,
    "jax-peak": jax_peak_worker,
    "torch-peak": torch_peak_worker,
    "tensorflow-check": tensorflow_check_worker,
    "jax-check": jax_check_worker,
    "torch-check": torch_check_worker,
}


# ------------------------------------------------------------- orchestrator
def _worker_env(args: argparse.Namespace, worker: str) -> dict[str, str]:
    """The worker's environment: its Keras backend, the thread counts, and JAX kept off a GPU for ``--device cpu``."""
    threads = str(args.threads)
    env = dict(
        os.environ,
        KERAS_BACKEND="jax" if worker.startswith("jax") else "tensorflow",
        TF_CPP_MIN_LOG_LEVEL="2",
        OMP_NUM_THREADS=threads,
        OPENBLAS_NUM_THREADS=threads,
        MKL_NUM_THREADS=threads,
    )
    if worker.startswith("jax") and args.device == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
    return env


def _run_worker(
    args: argparse.Namespace,
    worker: str,
    config: str | None = None,
    precision: str = "float32",
    record_dir: Path | None = None,
) -> dict:
    """Run ``worker`` in a fresh process (one framework only) and return what it emitted."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", worker]
    command += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size)]
    command += ["--threads", str(args.threads), "--device", args.device, "--precision", precision]
    command += ["--configs", ",".join(args.configs)] + (["--jit"] if args.jit else [])
    command += ["--config", config] if config else []
    command += ["--record-dir", str(record_dir)] if record_dir else []
    done = subprocess.run(command, capture_output=True, text=True, env=_worker_env(args, worker), cwd=HERE.parent)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode or not lines:
        raise RuntimeError(
            f"worker {worker} {config or ''} {precision} failed (exit {done.returncode}):\n"
            f"{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


@dataclass
class Row:
    """One configuration in one precision: per framework, the medians over its processes (absent: not run).

    Attributes:
        config: ``method/topology``.
        precision: the Keras dtype policy.
        img_s: images per second.
        rss_mb: peak resident memory of the worker process, MB.
        gflop: training GFLOP per image, as the framework's own graph counts them.
        percent_peak: img/s x GFLOP/img over the precision's best matmul rate, in % (above 100: no bound).
    """

    config: str
    precision: str
    img_s: dict[str, float]
    rss_mb: dict[str, float]
    gflop: dict[str, float]
    percent_peak: dict[str, float]

    def ratio(self, framework: str) -> float | None:
        """``framework``'s img/s over PyTorch channels-last's, if both ran."""
        if framework in self.img_s and REFERENCE in self.img_s:
            return self.img_s[framework] / self.img_s[REFERENCE]
        return None


def summarise(runs: Mapping[tuple[str, str, str], Sequence[dict]], peak_gflops: Mapping[str, float]) -> list[Row]:
    """Rows of the tables from every worker's result.

    Args:
        runs: ``(config, precision, framework)`` -> the results of its processes (`_time_steps`'s dicts).
        peak_gflops: precision -> the best matmul GFLOP/s measured in it.
    """
    rows: dict[tuple[str, str], Row] = {}
    for (config, precision, framework), results in runs.items():
        row = rows.setdefault((config, precision), Row(config, precision, {}, {}, {}, {}))
        row.img_s[framework] = statistics.median(r["img_s"] for r in results)
        row.rss_mb[framework] = statistics.median(r["rss_mb"] for r in results)
        row.gflop[framework] = results[0]["train_gflop_per_image"]
        row.percent_peak[framework] = 100 * row.img_s[framework] * row.gflop[framework] / peak_gflops[precision]
    return list(rows.values())


def throughput_table(rows: Sequence[Row], frameworks: Sequence[str]) -> str:
    """Markdown: img/s per framework, TensorFlow's and JAX's ratios to PyTorch channels-last, peak RSS."""
    label = [LABELS[f] for f in frameworks]
    ratios = [f for f in ("tensorflow", "jax") if f in frameworks]
    header = (
        ["config", "precision"]
        + [f"{name} img/s" for name in label]
        + [f"{LABELS[f]} / {LABELS[REFERENCE]}" for f in ratios]
        + [f"peak RSS MB ({' / '.join(label)})"]
    )
    lines = [_markdown_row(header), _markdown_row(["---"] * len(header))]
    for row in rows:
        cells = [row.config, row.precision]
        cells += [_fmt(row.img_s.get(f), ".1f") for f in frameworks]
        cells += [_fmt(row.ratio(f), ".2f") for f in ratios]
        cells.append(" / ".join(_fmt(row.rss_mb.get(f), ".0f") for f in frameworks))
        lines.append(_markdown_row(cells))
    return "\n".join(lines)


def peak_table(rows: Sequence[Row], frameworks: Sequence[str]) -> str:
    """Markdown: training GFLOP per image and each framework's fraction of the matmul peak (``n/a`` above 100 %)."""
    header = ["config", "precision", "GFLOP/img"] + [f"{LABELS[f]} %peak" for f in frameworks]
    lines = [_markdown_row(header), _markdown_row(["---"] * len(header))]
    for row in rows:
        percent = [row.percent_peak.get(f) for f in frameworks]
        cells = [row.config, row.precision, _fmt(next(iter(row.gflop.values()), None), ".3f")]
        cells += ["n/a" if p is not None and p > 100 else _fmt(p, ".1f") for p in percent]
        lines.append(_markdown_row(cells))
    return "\n".join(lines)


def flop_count_notes(rows: Sequence[Row]) -> list[str]:
    """A note per row whose frameworks count the training FLOPs more than 1 % apart (a graph mismatch)."""
    notes = []
    for row in rows:
        counts = row.gflop.values()
        if counts and max(counts) > 1.01 * min(counts):
            listed = ", ".join(f"{LABELS[f]} {g:.4f}" for f, g in row.gflop.items())
            notes.append(f"note: {row.config} {row.precision}: FLOP counts differ: {listed} GFLOP/img")
    return notes


def _markdown_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def measure_peaks(args: argparse.Namespace) -> dict[str, float]:
    """Per precision, the best matmul GFLOP/s of the frameworks' kernels; prints each framework's."""
    families = sorted({PEAK_FAMILY[f] for f in args.frameworks}, key=list(PEAK_FAMILY.values()).index)
    best = {}
    for precision in args.precisions:
        peak = {k: v for family in families for k, v in _run_worker(args, f"{family}-peak", None, precision).items()}
        best[precision] = max(peak.values())
        dtype = "bfloat16" if precision == "mixed_bfloat16" else "float32"
        print(
            f"{dtype} matmul peak GFLOP/s (sizes {', '.join(map(str, PEAK_SIZES[args.device]))}, "
            f"{args.threads} threads): " + ", ".join(f"{k} {v:.0f}" for k, v in peak.items()),
            flush=True,
        )
    return best


def measure_steps(args: argparse.Namespace) -> dict[tuple[str, str, str], list[dict]]:
    """Every (precision, configuration, repeat, framework) in a fresh process, frameworks alternating."""
    runs: dict[tuple[str, str, str], list[dict]] = {}
    for precision in args.precisions:
        for config in args.configs:
            for repeat in range(args.repeats):
                for framework in args.frameworks:
                    result = _run_worker(args, framework, config, precision)
                    runs.setdefault((config, precision, framework), []).append(result)
                    print(
                        f"  {config:<18} {precision:<15} {LABELS[framework]:<10} run {repeat + 1}/{args.repeats}: "
                        f"{result['img_s']:7.1f} img/s (step {result['step_s']:.3f} s, first step "
                        f"{result['first_step_s']:.1f} s, build {result['build_s']:.1f} s, "
                        f"RSS {result['rss_mb']:.0f} MB, {result['train_gflop_per_image']:.3f} GFLOP/img)",
                        flush=True,
                    )
    return runs


def orchestrate(args: argparse.Namespace) -> int:
    print(
        f"{BACKBONE} x2, batch {args.batch_size}, {', '.join(args.precisions)}, device {args.device}, "
        f"{args.threads} threads, {args.warmup} warm-up + {args.steps} timed steps, median of {args.repeats} "
        f"processes; {', '.join(LABELS[f] for f in args.frameworks)}" + (", TensorFlow with XLA" if args.jit else ""),
        flush=True,
    )
    peak_gflops = measure_peaks(args)
    rows = summarise(measure_steps(args), peak_gflops)
    print("\n" + throughput_table(rows, args.frameworks))
    print("\n" + peak_table(rows, args.frameworks))
    for note in flop_count_notes(rows):
        print(note)
    peaks = ", ".join(f"{p} {g:.0f}" for p, g in peak_gflops.items())
    print(f"%peak: img/s x training GFLOP/img / the precision's matmul peak (GFLOP/s: {peaks}, measured above)")
    if any(p > 100 for row in rows for p in row.percent_peak.values()):
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
    """Run the Keras vs PyTorch comparison in float32 and print it; non-zero exit if it fails.

    One process per Keras backend saves its steps to a temporary directory (JAX's only when ``jax`` is among the
    frameworks), then a torch process replays and compares them.
    """
    backends = ["tensorflow"] + (["jax"] if "jax" in args.frameworks else [])
    with tempfile.TemporaryDirectory(prefix="mfef-check-") as record_dir:
        for backend in backends:
            _run_worker(args, f"{backend}-check", record_dir=Path(record_dir))
        results = _run_worker(args, "torch-check", record_dir=Path(record_dir))
    ok = True
    for name, r in results.items():
        for line in r["lines"]:
            print(f"  {name}: {line}")
        full_ok = r["first_step_term_rel_diff"] <= TOLERANCE
        small_ok = max(r["small_term_rel_diff"], r["small_update_rel_diff"]) <= TOLERANCE
        ok = ok and full_ok and small_ok
        updates = " / ".join(f"{k:.1e} (float64: keras {k64:.1e}, torch {t64:.1e})" for k, k64, t64 in r["updates"])
        print(
            f"loss agreement {name}: {BACKBONE} batch {args.batch_size}: every loss term within "
            f"{r['first_step_term_rel_diff']:.1e} relative from the same weights (tolerance {TOLERANCE:.0e}): "
            f"{'OK' if full_ok else 'FAILED'}; weight updates keras vs torch, steps 1 / 2: {updates}\n"
            f"loss agreement {name}: resnet8 width 4 batch 8, 2 steps: loss terms within "
            f"{r['small_term_rel_diff']:.1e}, weight updates within {r['small_update_rel_diff']:.1e} relative "
            f"(tolerance {TOLERANCE:.0e}): {'OK' if small_ok else 'FAILED'}"
        )
    if len(results) < len(backends):
        print(f"loss agreement: FAILED, {len(results)} comparisons for {len(backends)} Keras backends")
        ok = False
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
