"""Checkpoints keyed by variable path: restore by name, refuse what does not fit, name the culprit."""

import errno
import io
import json
import os
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from mfef_keras import __version__
from mfef_keras.training.checkpoint import (
    CHECKPOINT_FILE,
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)


def _model(shapes: dict, optimizer_name: str = "sgd", fill: float = 0.0):
    """A stand-in for the distiller: named variables and a built SGD with momentum slots."""
    weights = [keras.Variable(np.full(shape, fill, "float32"), name=name) for name, shape in shapes.items()]
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9, name=optimizer_name)
    optimizer.build(weights)
    return SimpleNamespace(weights=weights, student_optimizer=optimizer, fusion_optimizer=None)


def _by_name(model) -> dict:
    return {v.path: v.numpy() for v in model.weights}


def _rewrite(path, change):
    """Apply ``change`` to the arrays of the checkpoint file at ``path``."""
    with np.load(path) as data:
        arrays = dict(data)
    change(arrays)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())


def _saved(tmp_path):
    model = _model({"kernel": (3,), "bias": (3,)})
    model.weights[0].assign([1.0, 2.0, 3.0])
    model.weights[1].assign([4.0, 5.0, 6.0])
    model.student_optimizer.variables[-1].assign([7.0, 8.0, 9.0])
    save_checkpoint(tmp_path, model, {"epoch": 3})
    return model


def test_variables_are_restored_by_path_not_position(tmp_path):
    saved = _saved(tmp_path)
    # Same shapes in the other order, and an optimiser Keras numbered differently in this process.
    other = _model({"bias": (3,), "kernel": (3,)}, optimizer_name="sgd_3")
    assert load_checkpoint(tmp_path, other) == {"epoch": 3}
    assert {k: v.tolist() for k, v in _by_name(other).items()} == {k: v.tolist() for k, v in _by_name(saved).items()}
    momenta = {v.path.split("/", 1)[1]: v.numpy().tolist() for v in other.student_optimizer.variables}
    assert momenta == {v.path.split("/", 1)[1]: v.numpy().tolist() for v in saved.student_optimizer.variables}
    with np.load(tmp_path / CHECKPOINT_FILE) as data:
        assert {"weights/kernel", "weights/bias", "student_optimizer/iteration"} <= set(data.files)
        assert json.loads(bytes(data["meta"]).decode()) == {
            "format_version": FORMAT_VERSION,
            "mfef_keras_version": __version__,
        }


def test_no_checkpoint_is_none(tmp_path):
    assert load_checkpoint(tmp_path, _model({"kernel": (3,)})) is None


@pytest.mark.parametrize(
    "shapes, match",
    [
        (
            {"kernel": (3,), "offset": (3,)},
            r"missing from the checkpoint: weights/offset, .*; not in this model: weights/bias",
        ),
        ({"kernel": (3,)}, r"not in this model: weights/bias, student_optimizer/.*bias"),
        ({"kernel": (3,), "bias": (4,)}, r"shape differs \(checkpoint vs model\): weights/bias \(3,\) vs \(4,\)"),
    ],
)
def test_a_renamed_missing_or_reshaped_variable_is_named_and_nothing_is_restored(tmp_path, shapes, match):
    _saved(tmp_path)
    model = _model(shapes)
    with pytest.raises(CheckpointError, match=match) as error:
        load_checkpoint(tmp_path, model)
    assert str(tmp_path / CHECKPOINT_FILE) in str(error.value) and "--run-dir" in str(error.value)
    assert all((v.numpy() == 0).all() for v in model.weights)


def test_old_positional_checkpoint_is_refused_with_advice(tmp_path):
    _saved(tmp_path)

    def positional(arrays):
        for index, key in enumerate([k for k in list(arrays) if k.startswith("weights/")]):
            arrays[f"weight_{index}"] = arrays.pop(key)
        del arrays["meta"]

    _rewrite(tmp_path / CHECKPOINT_FILE, positional)
    with pytest.raises(CheckpointError, match=r"older mfef_keras \(variables stored by position\).*Delete the run dir"):
        load_checkpoint(tmp_path, _model({"kernel": (3,), "bias": (3,)}))


def test_other_format_version_is_refused(tmp_path):
    _saved(tmp_path)

    def future(arrays):
        arrays["meta"] = np.frombuffer(json.dumps({"format_version": 99}).encode(), dtype=np.uint8)

    _rewrite(tmp_path / CHECKPOINT_FILE, future)
    with pytest.raises(CheckpointError, match=f"format version 99.*reads version {FORMAT_VERSION}"):
        load_checkpoint(tmp_path, _model({"kernel": (3,), "bias": (3,)}))


def test_two_variables_with_one_path_are_refused(tmp_path):
    model = _model({"kernel": (3,)})
    model.weights.append(keras.Variable(np.zeros(3, "float32"), name="kernel"))
    with pytest.raises(CheckpointError, match="Two variables share the path 'kernel'"):
        save_checkpoint(tmp_path, model, {"epoch": 0})
    with pytest.raises(CheckpointError, match="Two variables share the path 'kernel'"):
        load_checkpoint(tmp_path, model)
    assert not (tmp_path / CHECKPOINT_FILE).exists()


@pytest.mark.parametrize(
    "damage",
    [lambda data: data[: len(data) // 2], lambda data: b"", lambda data: data[:-300] + bytes(300)],
    ids=["cut in half", "empty", "zeroed tail"],
)
def test_a_damaged_checkpoint_is_named_with_what_to_do(tmp_path, damage):
    _saved(tmp_path)
    path = tmp_path / CHECKPOINT_FILE
    path.write_bytes(damage(path.read_bytes()))
    model = _model({"kernel": (3,), "bias": (3,)}, fill=0.5)
    with pytest.raises(CheckpointError, match=f"Checkpoint {path} is damaged.*Delete {path} to train this run again"):
        load_checkpoint(tmp_path, model)
    assert all((v.numpy() == 0.5).all() for v in model.weights)


def test_a_checkpoint_write_on_a_full_disk_keeps_the_previous_one_and_no_temporary_file(tmp_path, monkeypatch):
    _saved(tmp_path)
    before = (tmp_path / CHECKPOINT_FILE).read_bytes()

    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, _model({"kernel": (3,), "bias": (3,)}), {"epoch": 4})
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]
    assert (tmp_path / CHECKPOINT_FILE).read_bytes() == before
