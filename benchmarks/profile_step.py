"""Where the Keras TensorFlow MFEF training step spends its time: the TF profiler's op-level view, per precision.

The step is the one `benchmarks/train_throughput.py` times (two ResNet-32 students, the MFEF fusion path, FFL's
loss, the two PyTorch-form SGD optimisers, batch 128 of random CIFAR-100-shaped data): the distiller's own
``train_function`` on a repeated in-memory `tf.data` iterator. Each precision runs in a fresh process: it builds
the distiller, warms the step up, times ``--steps`` steps without the profiler (img/s and peak RSS), then traces
``--profile-steps`` steps with ``tf.profiler.experimental`` and reads the trace (the ``.xplane.pb``) back.

Printed per precision, as markdown:

- the top ``--top`` op types by self time: the time an op spends on its executor thread (its kernel, including
  the kernel's own parallel parts on the intra-op pool), in ms per step and as a share of all op time, and how
  many ops of that type run per step;
- the same time in categories: convolutions, BatchNorm kernels, casts, layout transposes, ReLU, the optimisers'
  updates (ops under the ``student_sgd``/``fusion_sgd`` scopes), BatchNorm moving statistics, and the rest
  (loss, L2 terms, metrics, gradient plumbing);
- the step's wall time against its op time: with ``--threads`` inter-op threads, op time up to ``threads`` x the
  wall time means the executor threads were busy running kernels; what is missing is dispatch, host work and
  waiting (host syncs would show here); the ops per step are the executor's dispatch count.

Run from the repository root (TensorFlow backend)::

    python benchmarks/profile_step.py                            # float32 and mixed_bfloat16
    python benchmarks/profile_step.py --precisions mixed_bfloat16 --top 20 --keep-trace /tmp/trace

The trace directory can be opened in TensorBoard's profile plugin where it is installed. Share figures are
fairly robust under other load on the machine; img/s are not.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULT_PREFIX = "PROFILE "
PRECISIONS = ("float32", "mixed_bfloat16")
# Executor bookkeeping events on the compute threads that wrap the op events: not ops.
WRAPPERS = {"ExecutorState::Process"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", default=",".join(PRECISIONS), help="comma list of Keras dtype policies")
    parser.add_argument("--config", default="mfef/independent", help="method/topology (default mfef/independent)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first, tracing included (default 3)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps without the profiler (default 10)")
    parser.add_argument("--profile-steps", type=int, default=5, help="steps traced by the profiler (default 5)")
    parser.add_argument("--top", type=int, default=10, help="op types listed (default 10)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="intra/inter-op threads")
    parser.add_argument("--keep-trace", type=Path, help="write the traces here (default: a temporary directory)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--worker", choices=PRECISIONS, help=argparse.SUPPRESS)
    parser.add_argument("--logdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.precisions = [p for p in args.precisions.split(",") if p]
    for precision in args.precisions:
        if precision not in PRECISIONS:
            parser.error(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if min(args.steps, args.warmup, args.profile_steps, args.top) < 1:
        parser.error("--steps, --warmup, --profile-steps and --top must be >= 1")
    return args


# ------------------------------------------------------------------ the trace
def category(node: str, op_type: str) -> str:
    """The category of one op, from its TensorFlow node name and (oneDNN-rewritten) op type."""
    if "Conv2D" in op_type or "Conv2d" in op_type:
        return "convolutions"
    if "FusedBatchNorm" in op_type:
        return "BatchNorm kernels"
    if op_type == "Cast":
        return "casts"
    if "Transpose" in op_type:
        return "transposes"
    if op_type in ("Relu", "ReluGrad", "_MklRelu", "_MklReluGrad"):
        return "ReLU"
    if re.search(r"(^|/)(student|fusion)_sgd/", node):
        return "optimiser updates"
    if re.search(r"_bn\d*(_\d+)?/", node) and "gradient_tape" not in node:
        return "BatchNorm moving statistics"
    return "other (loss, L2, metrics, gradient plumbing)"


def read_trace(logdir: Path, steps: int) -> dict:
    """Per-step op times from the newest ``.xplane.pb`` under ``logdir``.

    Returns ``types`` (op type -> [ms, count] per step), ``categories`` (name -> [ms, count] per step),
    ``op_ms`` (all op time per step) and ``wall_ms`` (the median traced step on the Python thread).
    """
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    path = sorted(logdir.glob("plugins/profile/*/*.xplane.pb"))[-1]
    space = xplane_pb2.XSpace()
    space.ParseFromString(path.read_bytes())
    host = next(plane for plane in space.planes if plane.name == "/host:CPU")
    types: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    categories: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    walls = []
    for line in host.lines:
        for event in line.events:
            name = host.event_metadata[event.metadata_id].name
            ms = event.duration_ps / 1e9
            if line.name == "python" and name in ("multi_step_on_iterator", "one_step_on_iterator"):
                walls.append(ms)
            # Op events are "node name:op type"; the executor's and thread pool's own events ("Class::Method")
            # are not ops.
            if not line.name.startswith("tf_Compute") or name in WRAPPERS or ":" not in name.replace("::", ""):
                continue
            node, op_type = name.rsplit(":", 1)
            for table, key in ((types, op_type), (categories, category(node, op_type))):
                table[key][0] += ms / steps
                table[key][1] += 1 / steps
    walls.sort()
    return dict(
        types=dict(types),
        categories=dict(categories),
        op_ms=sum(ms for ms, _ in types.values()),
        ops_per_step=sum(n for _, n in types.values()),
        wall_ms=walls[len(walls) // 2] if walls else None,
    )


# ------------------------------------------------------------------ the worker
def worker(args: argparse.Namespace) -> dict:
    """Build the distiller in ``args.worker`` precision, time its step, then trace it."""
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    tf.config.set_visible_devices([], "GPU")
    sys.path.insert(0, str(HERE))
    from jax_step import build_distiller

    distiller = build_distiller(args.config, "resnet32", 100, args.worker, 391, jit=False)
    rng = np.random.default_rng(0)
    batch = (
        rng.standard_normal((args.batch_size, 32, 32, 3)).astype("float32"),
        rng.integers(0, 100, args.batch_size).astype("int32"),
    )
    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    distiller.make_train_function()
    for _ in range(args.warmup):
        float(distiller.train_function(iterator)["loss"])
    start = time.perf_counter()
    for _ in range(args.steps):
        logs = distiller.train_function(iterator)
    float(logs["loss"])
    img_s = args.steps * args.batch_size / (time.perf_counter() - start)
    tf.profiler.experimental.start(str(args.logdir))
    for _ in range(args.profile_steps):
        logs = distiller.train_function(iterator)
    float(logs["loss"])
    tf.profiler.experimental.stop()
    return dict(
        precision=args.worker,
        img_s=img_s,
        rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        threads=args.threads,
        **read_trace(args.logdir, args.profile_steps),
    )


# ------------------------------------------------------------------ report
def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def report(result: dict, top: int) -> str:
    """Markdown tables of one precision's profile."""
    op_ms = result["op_ms"]
    wall, threads = result["wall_ms"] or float("nan"), result["threads"]
    busy = 100 * op_ms / (wall * threads)
    lines = [
        f"### {result['precision']}: {result['img_s']:.1f} img/s untraced, peak RSS {result['rss_mb']:.0f} MB",
        "",
        f"Traced step: {wall:.1f} ms wall, {op_ms:.1f} ms of op time ({busy:.0f} % of {threads} executor threads "
        f"busy; the rest is dispatch, host work and waiting), {result['ops_per_step']:.0f} ops per step.",
        "",
        _row(["op type (self time)", "ms/step", "% of op time", "ops/step"]),
        _row(["---"] * 4),
    ]
    ranked = sorted(result["types"].items(), key=lambda item: -item[1][0])
    for op_type, (ms, count) in ranked[:top]:
        lines.append(_row([op_type, f"{ms:.1f}", f"{100 * ms / op_ms:.1f}", f"{count:.0f}"]))
    lines += ["", _row(["category", "ms/step", "% of op time", "ops/step"]), _row(["---"] * 4)]
    for name, (ms, count) in sorted(result["categories"].items(), key=lambda item: -item[1][0]):
        lines.append(_row([name, f"{ms:.1f}", f"{100 * ms / op_ms:.1f}", f"{count:.0f}"]))
    return "\n".join(lines)


def run_worker(args: argparse.Namespace, precision: str, logdir: Path) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", precision, "--logdir", str(logdir)]
    for flag in ("config", "batch_size", "warmup", "steps", "profile_steps", "threads"):
        command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=HERE.parent)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode or not lines:
        raise RuntimeError(f"profile worker {precision} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(RESULT_PREFIX + json.dumps(worker(args)), flush=True)
        return 0
    print(
        f"{args.config}, 2 x resnet32, batch {args.batch_size}, {args.threads} threads; "
        f"{args.steps} timed steps, {args.profile_steps} traced; load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="mfef-profile-") as scratch:
        root = args.keep_trace or Path(scratch)
        for precision in args.precisions:
            result = run_worker(args, precision, root / precision)
            results.append(result)
            print("\n" + report(result, args.top), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
