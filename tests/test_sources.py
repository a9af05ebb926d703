"""One meaning of SOURCE: `mfef eval` takes what `mfef export` takes, through `resolve_model_source`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mfef_keras.training.model_source import resolve_model_source
from mfef_keras.zoo.manifest import shipped_manifest_path
from tests.helpers import subprocess_env

PRESET = "resnet8_mfef.digits_s0"


def _eval(*args: str, cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "mfef_keras.cli", "eval", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _top1(output: str) -> float:
    match = re.search(r"top-1 (\d+\.\d+)%", output)
    assert match, output
    return float(match.group(1)) / 100


# About 16 s on 2 cores: slow, run by .ci/run step 3, to keep the default suite under 10 minutes; test_first_hour's
# zoo pull and eval stays.
@pytest.mark.slow
def test_eval_of_a_zoo_preset_and_of_its_model_file(tmp_path):
    env = subprocess_env(MFEF_ZOO_OFFLINE="1", MFEF_ZOO_CACHE=str(tmp_path / "cache"))
    recorded = json.loads(shipped_manifest_path().read_text())["presets"][PRESET]["test_accuracy"]

    output = _eval(PRESET, cwd=tmp_path, env=env)
    assert _top1(output) == pytest.approx(recorded, abs=1e-4)
    # Beside the working directory: the cached preset must keep only its hashed files.
    assert (tmp_path / f"{PRESET}-eval" / "metrics.json").is_file()

    # A model.keras copied out with its metadata.json needs no --dataset.
    preset = resolve_model_source(PRESET).model_file.parent
    copy = tmp_path / "copy"
    shutil.copytree(preset, copy)
    output = _eval(str(copy / "model.keras"), "--normalize", cwd=tmp_path, env=env)
    assert _top1(output) == pytest.approx(recorded, abs=1e-4)
    metrics = json.loads((copy / "model-eval" / "metrics.json").read_text())
    assert metrics["dataset"] == "digits" and (copy / "model-eval" / "confusion_matrix.png").stat().st_size > 0


def test_resolver_kinds_and_refusals(tmp_path, monkeypatch):
    monkeypatch.setenv("MFEF_ZOO_OFFLINE", "1")
    monkeypatch.setenv("MFEF_ZOO_CACHE", str(tmp_path / "cache"))
    preset = resolve_model_source(PRESET)
    assert preset.kind == "zoo" and preset.card.dataset.name == "digits"

    run = tmp_path / "run"
    for name in ("students/s0", "students/s1", "best_student"):
        shutil.copytree(preset.model_file.parent, run / name)
    assert resolve_model_source(run).description == f"{run} (best_student)"
    second = resolve_model_source(run, student=1)
    assert second.kind == "run" and second.model_file == run / "students" / "s1" / "model.keras"
    assert resolve_model_source(run / "best_student").kind == "student"

    bare = tmp_path / "bare.keras"
    shutil.copy(preset.model_file, bare)
    assert resolve_model_source(bare).card is None
    with pytest.raises(ValueError, match="has no student 5; it has s0, s1"):
        resolve_model_source(run, student=5)
    with pytest.raises(ValueError, match="--student applies to run directories"):
        resolve_model_source(bare, student=0)
    with pytest.raises(ValueError, match="holds no student"):
        resolve_model_source(tmp_path / "cache")
    with pytest.raises(ValueError, match="'nothing' is not an existing path nor a usable zoo preset"):
        resolve_model_source("nothing")
