"""The `StudentCard`: round trip, every shipped preset's card, older layouts, bad fields, what training writes."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from helpers import run_mfef

from mfef_keras import student_card
from mfef_keras.data import dataset_info
from mfef_keras.student_card import FORMAT, StudentCard

ZOO = Path(__file__).resolve().parents[1] / "zoo"
MANIFEST = json.loads((ZOO / "manifest.json").read_text())["presets"]


def _preset_metadata(name: str) -> dict:
    with tarfile.open(ZOO / MANIFEST[name]["path"]) as archive:
        return json.loads(archive.extractfile(f"{name}/metadata.json").read())


def test_a_card_survives_a_write_and_a_read(tmp_path):
    card = StudentCard(
        dataset_info("digits"), backbone="resnet8", method="mfef", epoch=3, test_accuracy=0.5, extra={"later": [1]}
    )
    written = student_card.write(tmp_path / "metadata.json", card)
    assert student_card.read(written) == card
    assert json.loads(written.read_text())["format"] == FORMAT


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_every_shipped_preset_card_loads_and_matches_its_manifest_entry(name):
    raw = _preset_metadata(name)
    card = StudentCard.from_dict(raw, name)
    listed = MANIFEST[name]
    assert (card.name, card.backbone, card.method, card.params) == (
        name,
        listed["backbone"],
        listed["method"],
        listed["params"],
    )
    assert (card.dataset.name, card.dataset.num_classes) == (listed["dataset"], listed["num_classes"])
    assert list(card.dataset.image_shape) == listed["image_shape"]
    assert card.to_dict() == raw


def test_a_card_without_a_format_key_loads_as_the_current_version():
    card = StudentCard.from_dict({"dataset": dataset_info("digits").to_dict(), "backbone": "resnet8"})
    assert card.version == 1 and card.backbone == "resnet8" and card.to_dict()["format"] == FORMAT


@pytest.mark.parametrize(
    "change, field",
    [
        ({"epoch": "three"}, "'epoch'"),
        ({"test_accuracy": True}, "'test_accuracy'"),
        ({"format": "mfef-student/9"}, "'format'"),
        ({"dataset": {"name": "x"}}, "'dataset'"),
    ],
)
def test_a_bad_field_is_refused_in_one_line_naming_the_file_and_the_field(tmp_path, change, field):
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps({"dataset": dataset_info("digits").to_dict(), **change}))
    with pytest.raises(ValueError) as refused:
        student_card.read(path)
    message = str(refused.value)
    assert "\n" not in message and str(path) in message and field in message


@pytest.mark.slow
def test_the_card_a_tiny_training_run_writes_reads_back_with_the_run_settings(tmp_path):
    run = tmp_path / "run"
    tiny = ["--base-width", "4", "--train-limit", "128", "--batch-size", "64", "--no-progress"]
    result = run_mfef(
        "train", "--epochs", "1", "--backbone", "resnet8", "--method", "dml", "--run-dir", str(run), *tiny
    )
    assert result.returncode == 0, result.stderr
    card = student_card.read(run / "best_student" / "metadata.json")
    assert (card.backbone, card.method, card.epoch, card.base_width) == ("resnet8", "dml", 1, 4)
    assert card.dataset.class_names == dataset_info("digits").class_names


def test_an_export_carries_the_card_in_onnx_metadata_props_and_the_saved_model_assets(tmp_path):
    import onnx

    from mfef_keras.export import export_student
    from mfef_keras.export.metadata import card_from_props
    from mfef_keras.models import get_backbone
    from mfef_keras.student_dir import save_student_dir

    card = StudentCard(dataset_info("digits"), backbone="resnet8", base_width=4, method="dml", epoch=2)
    model = get_backbone("resnet8", 10, input_shape=(32, 32, 1), base_width=4)
    export_student(save_student_dir(tmp_path / "student", model, card), tmp_path / "export", "all")
    proto = onnx.load(tmp_path / "export" / "model.onnx")
    props = card_from_props({entry.key: entry.value for entry in proto.metadata_props})
    assert StudentCard.from_dict(props["student"]) == card
    # TensorFlow Serving and `tf.saved_model.load` users get it beside the graph, where SavedModel keeps extras.
    assert student_card.read(tmp_path / "export" / "saved_model" / "assets.extra" / "student_card.json") == card


def test_zoo_info_prints_the_card_of_a_pulled_preset(tmp_path, monkeypatch):
    monkeypatch.setenv("MFEF_ZOO_CACHE", str(tmp_path))
    name = "resnet8_mfef.digits_s0"
    assert run_mfef("zoo", "pull", name).returncode == 0
    shown = run_mfef("zoo", "info", name)
    assert shown.returncode == 0, shown.stderr
    line = next(line for line in shown.stdout.splitlines() if line.startswith("card "))
    assert "resnet8 by mfef, epoch 20, digits (10 classes, 32x32x1 images), license Apache-2.0" in line
