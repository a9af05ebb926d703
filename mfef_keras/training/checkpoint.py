"""Atomic training checkpoints: model weights, both optimisers' state and the run's history in one file.

Variables are stored under their Keras paths (not their positions), so a checkpoint restores into a
model only if every variable finds its counterpart with the same shape. The file holds plain NumPy arrays
and the paths are the same on every Keras backend, so a run started on TensorFlow resumes on JAX and back.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from mfef_keras import __version__
from mfef_keras._regular_files import check_regular
from mfef_keras.atomic_files import write_bytes_atomic

CHECKPOINT_FILE = "checkpoint.npz"
# Bump when the layout of the file changes; 1 was the positional layout (weight_0, optimizer_0...).
FORMAT_VERSION = 2
_META_KEY = "meta"
_STATE_KEY = "state"
# How many names of missing, unexpected or reshaped variables an error message lists.
_LISTED = 5


class CheckpointError(ValueError):
    """A checkpoint that cannot be restored into this model."""


def _advice(path: Path) -> str:
    # The whole directory: its students and metrics belong to the checkpoint's run.
    return f"Delete the run directory {path.parent} to start over, or choose another --run-dir."


def _json_array(data: dict) -> np.ndarray:
    return np.frombuffer(json.dumps(data).encode(), dtype=np.uint8)


def _variables_by_key(distiller) -> dict:
    """Every variable a checkpoint holds, keyed ``weights/<path>`` or ``<optimizer attribute>/<path>``.

    An optimiser's variables are created under its own name, which Keras numbers per process
    (``sgd``, ``sgd_1``...), so that leading name is replaced by the attribute holding the optimiser.

    Raises:
        CheckpointError: two variables share a path, so they could not be told apart on restore.
    """
    groups = {"weights": ("", distiller.weights)}
    for attribute in ("student_optimizer", "fusion_optimizer"):
        optimizer = getattr(distiller, attribute)
        if optimizer is not None:
            groups[attribute] = (f"{optimizer.name}/", optimizer.variables)
    variables = {}
    for group, (prefix, members) in groups.items():
        for variable in members:
            key = f"{group}/{variable.path.removeprefix(prefix)}"
            if key in variables:
                raise CheckpointError(
                    f"Two variables share the path {variable.path!r}, so a checkpoint cannot tell them apart. "
                    "Give the layers that own them distinct names."
                )
            variables[key] = variable
    return variables


def save_checkpoint(directory: Path, distiller, state: dict) -> Path:
    """Write weights, optimiser variables and ``state`` to ``directory/checkpoint.npz``.

    The file is written under a temporary name and renamed over the previous one, so a
    kill during the write leaves the previous checkpoint intact.

    Args:
        directory: the run directory.
        distiller: the `OnlineDistiller`, compiled and with its optimisers built.
        state: JSON-serialisable training state (completed epochs, history).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {key: np.asarray(variable) for key, variable in _variables_by_key(distiller).items()}
    arrays[_META_KEY] = _json_array({"format_version": FORMAT_VERSION, "mfef_keras_version": __version__})
    arrays[_STATE_KEY] = _json_array(state)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    target = directory / CHECKPOINT_FILE
    write_bytes_atomic(target, buffer.getvalue())
    return target


def _mismatch(path: Path, meta: dict, missing: list, unexpected: list, reshaped: list) -> CheckpointError:
    def listed(names: list[str]) -> str:
        more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
        return ", ".join(names[:_LISTED]) + more

    problems = []
    if missing:
        problems.append(f"missing from the checkpoint: {listed(missing)}")
    if unexpected:
        problems.append(f"not in this model: {listed(unexpected)}")
    if reshaped:
        problems.append(f"shape differs (checkpoint vs model): {listed(reshaped)}")
    return CheckpointError(
        f"Checkpoint {path} (written by mfef_keras {meta.get('mfef_keras_version', '?')}) does not fit this model; "
        f"{'; '.join(problems)}. It was written by other code or another configuration. {_advice(path)}"
    )


def load_checkpoint(directory: Path, distiller) -> dict | None:
    """Restore a checkpoint into ``distiller``; returns its state, or None if there is none.

    Nothing is assigned unless every variable of the model is in the checkpoint with its shape.

    Args:
        directory: the run directory.
        distiller: the `OnlineDistiller`, compiled and with its optimisers built.

    Raises:
        CheckpointError: the file is damaged or of another format, or a variable is missing, extra or
            reshaped (the message names them).
    """
    # Checked before looking for the file, so that a fresh run fails before its first epoch, not after.
    variables = _variables_by_key(distiller)
    path = Path(directory) / CHECKPOINT_FILE
    if not path.exists():
        return None
    arrays = _read(path)
    if _META_KEY not in arrays:
        raise CheckpointError(
            f"Checkpoint {path} was written by an older mfef_keras (variables stored by position), which "
            f"this version cannot restore safely. {_advice(path)}"
        )
    meta = json.loads(bytes(arrays.pop(_META_KEY)).decode())
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"Checkpoint {path} has format version {meta.get('format_version')!r} (mfef_keras "
            f"{meta.get('mfef_keras_version', '?')}); this mfef_keras {__version__} reads version "
            f"{FORMAT_VERSION}. {_advice(path)}"
        )
    state = json.loads(bytes(arrays.pop(_STATE_KEY)).decode())
    # In the model's and the file's order: weights (stage by stage) before optimiser slots.
    missing = [key for key in variables if key not in arrays]
    unexpected = [key for key in arrays if key not in variables]
    reshaped = [
        f"{key} {arrays[key].shape} vs {tuple(variables[key].shape)}"
        for key in variables
        if key in arrays and arrays[key].shape != tuple(variables[key].shape)
    ]
    if missing or unexpected or reshaped:
        raise _mismatch(path, meta, missing, unexpected, reshaped)
    for key, variable in variables.items():
        variable.assign(arrays[key])
    return state


def _read(path: Path) -> dict[str, np.ndarray]:
    """Every array of the checkpoint file ``path``, read in full so that damage anywhere shows now.

    Raises:
        CheckpointError: the file is cut short or damaged; the message names it and says what to do.
    """
    try:
        with np.load(check_regular(path)) as data:
            arrays = {key: data[key] for key in data.files}
        for key in (_META_KEY, _STATE_KEY):
            if key in arrays:
                json.loads(bytes(arrays[key]).decode())
    except (zipfile.BadZipFile, EOFError, ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(
            f"Checkpoint {path} is damaged and cannot be read ({type(error).__name__}: {error}); a disk that "
            f"filled up or a copy that did not finish can cut it short. Delete {path} to train this run again "
            f"from its first epoch, or delete the run directory {path.parent} to start over, or choose another "
            "--run-dir."
        ) from None
    return arrays
