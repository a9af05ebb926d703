"""The README's flow, each command in a process of its own: train, eval, zoo publish and pull, export, predict.

Each command works on what an earlier process wrote, as users run them, so nothing a command needs
can come from a module that happened to be imported by a previous step.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mfef_keras.data import dataset_info, load_arrays
from tests.helpers import subprocess_env

NAME = "resnet8_mfef.digits_flow0"
TINY = ["--epochs", "1", "--train-limit", "64", "--batch-size", "32", "--base-width", "4", "--no-progress"]


def _mfef(*args, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "mfef_keras.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, f"mfef {' '.join(map(str, args))}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _top1(output: str) -> float:
    match = re.search(r"top-1 (\d+\.\d+)%", output)
    assert match, output
    top1 = float(match.group(1)) / 100
    assert 0.0 <= top1 <= 1.0
    return top1


def test_readme_flow_in_separate_processes(tmp_path):
    env = subprocess_env(MFEF_ZOO_CACHE=str(tmp_path / "cache"), MFEF_ZOO_MANIFEST=str(tmp_path / "zoo/manifest.json"))
    run = tmp_path / "run"
    output = _mfef("train", "--run-dir", run, *TINY, env=env)
    assert "best student:" in output
    for student in ("best_student", "students/s0", "students/s1"):
        assert (run / student / "model.keras").is_file() and (run / student / "metadata.json").is_file()
    recorded = json.loads((run / "summary.json").read_text())["best_student"]["test_at_best"]

    output = _mfef("eval", run, env=env)
    # The reloaded best student scores what training recorded for it on the same test split.
    assert _top1(output) == pytest.approx(recorded, abs=5e-5)
    assert json.loads((run / "best_student/eval/metrics.json").read_text())["top1"] == pytest.approx(recorded, abs=1e-6)
    output = _mfef("eval", run / "best_student/model.keras", "--dataset", "digits", env=env)
    assert _top1(output) == pytest.approx(recorded, abs=5e-5)
    assert (run / "best_student/model-eval/confusion_matrix.png").is_file()

    output = _mfef("zoo", "publish", run, "--name", NAME, "--out", tmp_path / "zoo", env=env)
    assert f"Archive {tmp_path / 'zoo' / NAME}.tar.gz" in output
    assert NAME in json.loads((tmp_path / "zoo/manifest.json").read_text())["presets"]
    output = _mfef("zoo", "pull", NAME, env=env)
    pulled = Path(re.search(r"verified, in (\S+)", output).group(1))
    assert pulled.is_relative_to(tmp_path / "cache")
    assert (pulled / "model.keras").read_bytes() == (tmp_path / "zoo" / NAME / "model.keras").read_bytes()

    output = _mfef("export", run, "--out", tmp_path / "export", env=env)
    assert re.search(r"onnx vs keras .* ok", output), output
    assert (tmp_path / "export/model.onnx").is_file()

    images, _ = load_arrays("digits", "test", limit=3)
    np.save(tmp_path / "digits.npy", images)
    output = _mfef("predict", tmp_path / "export", tmp_path / "digits.npy", "--top-k", "2", env=env)
    lines = output.splitlines()
    assert [lines[i] for i in (0, 3, 6)] == [f"{tmp_path / 'digits.npy'}[{i}]" for i in range(3)]
    class_names = dataset_info("digits").class_names
    for line in lines[1:3] + lines[4:6] + lines[7:9]:
        rank, label, probability = line.split()
        assert rank in ("1.", "2.") and label in class_names and 0.0 <= float(probability) <= 1.0
