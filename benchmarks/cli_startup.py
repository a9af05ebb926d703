"""Wall-clock start-up of the `mfef` commands that need no TensorFlow: help, listings, the zoo and predict.

Each command runs ``--runs`` times in a fresh process (the first run also warms the disk cache);
the best and the median are printed. ``predict`` runs on an export of the shipped preset
resnet8_mfef.digits_s0, made once beforehand (that export imports TensorFlow and is not timed).
The zoo runs offline against a private cache, so nothing is downloaded.

Usage:
    python benchmarks/cli_startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PRESET = "resnet8_mfef.digits_s0"


def _mfef() -> list[str]:
    script = shutil.which("mfef", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "mfef_keras.cli"]


def _seconds(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="Timed runs per command.")
    args = parser.parse_args()
    mfef = _mfef()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        env = dict(
            os.environ,
            KERAS_HOME=str(work / "keras"),
            MFEF_ZOO_OFFLINE="1",
            MFEF_ZOO_CACHE=str(work / "cache"),
            TF_CPP_MIN_LOG_LEVEL="3",
        )
        subprocess.run([*mfef, "export", PRESET, "--out", str(work / "export")], env=env, check=True)
        shape = json.loads((work / "export" / "metadata.json").read_text())["input"]["shape"][1:]
        np.save(work / "images.npy", np.zeros((2, *shape), np.uint8))
        commands = {
            "mfef --help": ["--help"],
            "mfef list-backbones": ["list-backbones"],
            "mfef zoo list": ["zoo", "list"],
            f"mfef zoo info {PRESET}": ["zoo", "info", PRESET],
            f"mfef zoo pull {PRESET}": ["zoo", "pull", PRESET],
            "mfef predict EXPORT images.npy": ["predict", str(work / "export"), str(work / "images.npy")],
        }
        print(f"{'command':<40}{'best':>8}{'median':>9}  ({args.runs} runs)")
        for label, arguments in commands.items():
            times = [_seconds([*mfef, *arguments], env) for _ in range(args.runs)]
            print(f"{label:<40}{min(times):>7.2f}s{statistics.median(times):>8.2f}s")


if __name__ == "__main__":
    main()
