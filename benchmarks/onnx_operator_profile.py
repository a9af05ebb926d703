"""Where onnxruntime spends its time: per-operator shares for an exported model.

    python benchmarks/onnx_operator_profile.py EXPORT_DIR_OR_ONNX [--batch 128] [--runs 10]

Exports nothing itself: point it at the output of `mfef export` (for resnet32 on 100 classes, export
`get_backbone("resnet32", 100)` saved as a student directory). Prints img/s, then each operator type's
share of kernel time and its milliseconds per batch.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="an .onnx file or an export directory holding model.onnx")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    path = Path(args.model)
    path = path / "model.onnx" if path.is_dir() else path

    # The profile is read back below; it goes to a folder of its own, not the current directory.
    profile_dir = tempfile.TemporaryDirectory(prefix="mfef-ort-profile-")
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(profile_dir.name) / "onnxruntime_profile")
    options.intra_op_num_threads = os.cpu_count() or 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    shape = [args.batch, *spec.shape[1:]]
    images = (
        np.random.default_rng(0).integers(0, 256, size=shape).astype(np.uint8 if "uint8" in spec.type else np.float32)
    )
    for _ in range(3):
        session.run(None, {spec.name: images})
    start = time.perf_counter()
    for _ in range(args.runs):
        session.run(None, {spec.name: images})
    print(f"{path}: {args.runs * args.batch / (time.perf_counter() - start):,.0f} img/s at batch {args.batch}")

    events = json.loads(Path(session.end_profiling()).read_text())
    profile_dir.cleanup()
    per_op: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"]
    total = sum(per_op.values())
    calls = args.runs + 3
    for op, microseconds in per_op.most_common():
        print(f"{op:24s} {100 * microseconds / total:5.1f} %  {microseconds / calls / 1000:8.2f} ms/batch")


if __name__ == "__main__":
    main()
