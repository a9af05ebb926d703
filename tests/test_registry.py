"""The one registration mechanism, and every registered entry held to its contract (as keras-hub's backbone tests).

The contract tests are parametrised over the registries themselves, so a new entry is tested by being registered:
backbones (a step, a plain-Keras reload, an ONNX export with parity) and datasets here, methods in
tests/test_distiller.py (each trains) and export formats in tests/test_export.py (``"all"`` writes each with
parity).
"""

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from mfef_keras.choices import BACKBONES, DATASETS
from mfef_keras.cli import main
from mfef_keras.data import DatasetInfo, dataset_info, list_datasets
from mfef_keras.distill.methods import METHODS, list_methods, method_descriptions
from mfef_keras.export.formats import ALL, FORMATS
from mfef_keras.models import get_backbone, list_backbones, to_plain_keras
from mfef_keras.registry import Registry


def _colours() -> Registry:
    colours = Registry("colour")
    colours.register("red", "The colour of blood.")("#f00")
    colours.register("green10", "A shade of green.")("#0a0")
    colours.register("green2", "Another shade of green.")("#0f0")
    return colours


def test_a_registry_keeps_entries_descriptions_and_order():
    colours = _colours()
    assert colours.get("red") == "#f00" and colours.description("green2") == "Another shade of green."
    assert colours.names() == ["red", "green10", "green2"] and len(colours) == 3 and "red" in colours
    assert colours.list() == ["green2", "green10", "red"] and colours.list("green*") == ["green2", "green10"]
    assert colours.list("blue*") == []


def test_a_registry_decorator_returns_what_it_registers():
    shapes = Registry("shape")

    @shapes.register("square", "Four equal sides.")
    def square(side: float) -> float:
        return side * side

    assert shapes.get("square") is square and square(3) == 9
    # Registering the same entry again (a module imported twice) is allowed; another entry is not.
    shapes.register("square", "Four equal sides.")(square)
    with pytest.raises(ValueError, match="A shape named 'square' is already registered"):
        shapes.register("square", "Four equal sides.")(lambda side: side)


def test_an_unknown_name_is_one_line_naming_it_and_the_allowed_ones():
    with pytest.raises(ValueError) as error:
        _colours().get("gren2")
    message = str(error.value)
    assert "\n" not in message and "'gren2'" in message and "Allowed: green10, green2, red." in message
    assert "Did you mean 'green2'?" in message
    with pytest.raises(ValueError, match="Unknown colour 'blue'"):
        _colours().description("blue")


@pytest.mark.parametrize("name, description", [("", "Empty."), ("blue", ""), ("blue", "Two\nlines.")])
def test_an_entry_needs_a_name_and_a_one_line_description(name, description):
    with pytest.raises(ValueError, match="needs a name and a one-line description"):
        Registry("colour").register(name, description)


def test_every_registry_lists_what_its_readers_offer():
    assert list_backbones() == BACKBONES.list() and list_datasets() == DATASETS.list()
    assert sorted(list_methods()) == sorted(METHODS) and list(method_descriptions()) == list_methods()
    runner = CliRunner()
    assert runner.invoke(main, ["list-backbones"]).output.split() == BACKBONES.list()
    assert runner.invoke(main, ["list-backbones", "wrn16*"]).output.split() == BACKBONES.list("wrn16*")
    listed = [line.split()[0] for line in runner.invoke(main, ["list-methods"]).output.splitlines()]
    assert [name for name in listed if name != "--method-option" and name != "fused"] == list_methods()
    train_help = " ".join(runner.invoke(main, ["train", "--help"]).output.split())
    assert f"{', '.join(DATASETS.list())} or folder:PATH" in train_help
    export_help = runner.invoke(main, ["export", "--help"]).output
    assert f"[{'|'.join([*FORMATS, ALL])}]" in export_help


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_backbone_builds_trains_a_step_and_reloads_as_plain_keras(tmp_path, name):
    images = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype("float32")
    labels = np.arange(4) % 3
    model = get_backbone(name, num_classes=3, base_width=2)
    # Eager: tracing a graph of the deeper backbones takes longer than their one step.
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=loss, run_eagerly=True)
    before = [variable.numpy().copy() for variable in model.trainable_variables]
    assert np.isfinite(model.train_on_batch(images, labels))
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables))

    plain = to_plain_keras(model)
    assert not [layer.name for layer in plain.layers if type(layer).__module__.startswith("mfef_keras")]
    plain.save(tmp_path / "plain.keras")
    reloaded = keras.saving.load_model(tmp_path / "plain.keras")
    np.testing.assert_allclose(reloaded(images, training=False), model(images, training=False), atol=1e-5)


# tf2onnx converts each graph in a few seconds, twenty backbones in about two minutes: .ci/run's slow step runs it.
@pytest.mark.slow
@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_backbone_exports_to_onnx_with_parity(tmp_path, name):
    from mfef_keras.export import export_student

    model = to_plain_keras(get_backbone(name, num_classes=3, base_width=2, input_shape=(16, 16, 3)))
    # Untrained deep ResNets' activations grow with depth (resnet110's logits reach 6e7 on normal images), and float32
    # rounds in proportion; the classifier is scaled to a trained student's logits, about 1, so that the export's
    # absolute tolerance (1e-4) measures the conversion, not the scale.
    classifier = model.layers[-1]
    assert isinstance(classifier, keras.layers.Dense)
    images = np.random.default_rng(0).normal(size=(10, 16, 16, 3)).astype("float32")
    scale = float(np.abs(model(images, training=False)).max())
    classifier.kernel.assign(classifier.kernel / scale)
    classifier.bias.assign(classifier.bias / scale)
    model.save(tmp_path / "student.keras")
    report = export_student(tmp_path / "student.keras", tmp_path / "export", "onnx", preprocess=False)
    assert (tmp_path / "export" / "model.onnx").is_file()
    # The export compared the ONNX model with the Keras student (it refuses to write on a mismatch): say so here.
    checked = [result for result in report.parity if result.artifact == "onnx"]
    assert checked and all(result.max_abs_diff <= 1e-4 and result.top1_agreement == 1.0 for result in checked)


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_has_its_info_or_says_where_its_data_goes(tmp_path, name):
    try:
        info = dataset_info(name, data_dir=tmp_path)
    except FileNotFoundError as error:
        # A dataset read from the data directory names, in one line, where its files go.
        assert DATASETS.get(name).reads_data_dir and str(tmp_path) in str(error) and "\n" not in str(error)
        return
    assert isinstance(info, DatasetInfo) and info.name == name
    assert len(info.class_names) == info.num_classes > 1 and len(info.image_shape) == 3
    assert set(info.splits) == {"train", "val", "test"} and min(info.splits.values()) > 0
