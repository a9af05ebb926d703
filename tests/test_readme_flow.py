"""The README's flow, each command in a process of its own: train, eval, zoo publish and pull, export, predict,
and the exported models' accuracy (fp32 and int8 ONNX) measured by `mfef eval`.

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
# A student right about half the time, so that the exported models' accuracy compares real predictions.
TINY = ["--epochs", "2", "--train-limit", "512", "--batch-size", "32", "--base-width", "16", "--lr", "0.05"]
TINY += ["--no-progress"]


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


# About 90 s of child processes on 2 cores, the longest test: slow, run by .ci/run step 3. The default suite keeps
# the same commands in pieces (test_first_hour, test_sources, test_train_cli).
@pytest.mark.slow
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

    _check_onnx_accuracy(run, tmp_path, env)


def _eval_onnx(model: Path, out: Path, env: dict[str, str]) -> dict:
    """`mfef eval` of an ONNX model in a process of its own: what it printed agrees with its metrics.json."""
    output = _mfef("eval", model, "--out", out, env=env)
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"{metrics['model']} on onnxruntime " in output and "CPUExecutionProvider" in output
    assert _top1(output) == pytest.approx(metrics["top1"], abs=5e-5) and metrics["examples"] == 360
    assert metrics["correct"] == round(metrics["top1"] * 360)
    return metrics


def _check_onnx_accuracy(run: Path, tmp_path: Path, env: dict[str, str]) -> None:
    """fp32 and int8 exports, each made and evaluated in processes of their own, against the Keras student."""
    keras_metrics = json.loads((run / "best_student/eval/metrics.json").read_text())
    _mfef("export", run, "--out", tmp_path / "export-int8", "--quantize", "int8", env=env)

    fp32 = _eval_onnx(tmp_path / "export/model.onnx", tmp_path / "eval-fp32", env)
    # The Keras student normalises its images in tf.data, the ONNX graph in onnxruntime: the same formula in
    # float32, in another order of operations, so a logit may differ in its last bits (the export checks 1e-4)
    # and an image whose top two logits tie that closely could flip. One such image is allowed, no more.
    keras_correct = round(keras_metrics["top1"] * 360)
    assert abs(fp32["correct"] - keras_correct) <= 1, (fp32["top1"], keras_metrics["top1"])
    moved = np.abs(np.array(fp32["confusion_matrix"]) - np.array(keras_metrics["confusion_matrix"])).sum()
    assert moved <= 2, "more than one image is classified differently by the ONNX model and the Keras student"
    # Exact and reproducible: a second process gives every figure again.
    assert _eval_onnx(tmp_path / "export/model.onnx", tmp_path / "eval-fp32-again", env) == fp32

    int8 = _eval_onnx(tmp_path / "export-int8/model.int8.onnx", tmp_path / "eval-int8", env)
    # The export measured its int8 model on the same test split, with the same runtime, when it wrote it.
    quantization = json.loads((tmp_path / "export-int8/metadata.json").read_text())["quantization"]
    assert int8["top1"] == pytest.approx(quantization["accuracy"], abs=1e-12)
    # An export folder evaluates its float32 model.onnx, as mfef predict runs it (--int8 picks the int8 one there).
    assert _eval_onnx(tmp_path / "export-int8", tmp_path / "eval-folder", env)["top1"] == fp32["top1"]
