"""The fused classifier as an artefact: a run keeps it beside its students, and `mfef export --model fused`
exports the whole cohort with its head as one validated graph whose card says it is the accuracy option."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mfef_keras.distill import OnlineDistiller, method_class
from mfef_keras.distill.methods import fused_methods
from mfef_keras.models import build_students
from tests.helpers import run_mfef

TINY = ["--base-width", "4", "--train-limit", "128", "--batch-size", "64", "--no-progress", "--epochs", "1"]


def test_the_methods_with_a_fused_classifier_come_from_the_registry():
    assert fused_methods() == ["ffl", "mfef", "one", "pcl"]
    assert all(method_class(name).head_classifiers == ("fused",) for name in fused_methods())


@pytest.mark.parametrize("method", fused_methods())
def test_the_fused_classifier_computes_the_distillers_fused_logits(method):
    distiller = OnlineDistiller(
        build_students(["resnet20", "resnet8"], 5, base_width=4, input_shape=(16, 16, 3)), method=method
    )
    images = np.random.default_rng(0).normal(size=(3, 16, 16, 3)).astype("float32")
    fused = distiller.fused_classifier()
    assert len(fused.inputs) == 1 and tuple(fused.output.shape) == (None, 5)
    np.testing.assert_allclose(fused.predict(images, verbose=0), np.asarray(distiller(images)["fused"]), atol=1e-5)
    with pytest.raises(ValueError, match="Method 'dml' has no fused classifier to export; ffl, mfef, one, pcl have"):
        OnlineDistiller(build_students("resnet8", 5, base_width=4), method="dml").fused_classifier()


# Two cohorts trained and one exported in child processes (36 s): out of the default suite (kept under 10 minutes),
# run by .ci/run's slow step; the fused graph itself is checked above.
@pytest.mark.slow
def test_export_model_fused_writes_the_cohort_as_one_validated_graph(tmp_path):
    run = tmp_path / "run"
    done = run_mfef("train", "--backbone", "resnet20,resnet8", "--method", "mfef", *TINY, "--run-dir", run)
    assert done.returncode == 0, done.stderr[-2000:]
    card = json.loads((run / "fused" / "metadata.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    assert card["model"] == "fused" and card["backbone"] == "resnet20+resnet8"
    assert "accuracy option" in card["note"] and card["test_accuracy"] == summary["fused"]["test_at_best"]
    out = tmp_path / "fused-export"
    exported = run_mfef("export", run, "--model", "fused", "--out", out, timeout=600)
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert "ok" in exported.stdout
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["model"] == "fused" and "accuracy option" in metadata["note"]
    assert all(entry["max_abs_diff"] <= 1e-4 for entry in metadata["parity"]), metadata["parity"]
    dml = tmp_path / "dml"
    assert run_mfef("train", "--method", "dml", *TINY, "--run-dir", dml).returncode == 0
    refused = run_mfef("export", dml, "--model", "fused", "--out", tmp_path / "nothing")
    assert refused.returncode != 0 and "has no fused classifier" in refused.stderr and "pcl" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "nothing").exists()


# Training and exporting a cohort in child processes, about 20 s a method: run by .ci/run's slow step.
@pytest.mark.slow
@pytest.mark.parametrize("method", ["pcl", "ffl"])
def test_export_model_fused_of_a_pcl_or_ffl_run(method, tmp_path):
    run = tmp_path / method
    done = run_mfef("train", "--method", method, *TINY, "--run-dir", run)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((run / "fused" / "metadata.json").read_text())["method"] == method
    out = tmp_path / "export"
    exported = run_mfef("export", run, "--model", "fused", "--out", out, timeout=600)
    assert exported.returncode == 0, exported.stderr[-2000:]
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["model"] == "fused" and "accuracy option" in metadata["note"]
    assert metadata["parity"] and all(entry["max_abs_diff"] <= 1e-4 for entry in metadata["parity"]), metadata
