"""Atomic training checkpoints: model weights, both optimisers' state and the run's history in one file."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from mfef_keras.student_dir import write_bytes_atomic

CHECKPOINT_FILE = "checkpoint.npz"


def _optimizer_variables(distiller):
    variables = list(distiller.student_optimizer.variables)
    if distiller.fusion_optimizer is not None:
        variables += list(distiller.fusion_optimizer.variables)
    return variables


def save_checkpoint(directory: Path, distiller, state: dict) -> Path:
    """Write weights, optimiser variables and ``state`` to ``directory/checkpoint.npz``.

    The file is written under a temporary name and renamed over the previous one, so a
    kill during the write leaves the previous checkpoint intact.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {f"weight_{i}": np.asarray(v) for i, v in enumerate(distiller.weights)}
    arrays.update({f"optimizer_{i}": np.asarray(v) for i, v in enumerate(_optimizer_variables(distiller))})
    arrays["state"] = np.frombuffer(json.dumps(state).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    target = directory / CHECKPOINT_FILE
    write_bytes_atomic(target, buffer.getvalue())
    return target


def load_checkpoint(directory: Path, distiller) -> dict | None:
    """Restore a checkpoint into ``distiller`` (optimisers already built); returns its state, or None if absent."""
    path = Path(directory) / CHECKPOINT_FILE
    if not path.exists():
        return None
    with np.load(path) as data:
        weights = distiller.weights
        optimizer_vars = _optimizer_variables(distiller)
        n_weights = sum(k.startswith("weight_") for k in data.files)
        n_optimizer = sum(k.startswith("optimizer_") for k in data.files)
        if (n_weights, n_optimizer) != (len(weights), len(optimizer_vars)):
            raise ValueError(
                f"Checkpoint {path} holds {n_weights} weights and {n_optimizer} optimizer variables; this model has "
                f"{len(weights)} and {len(optimizer_vars)}. It was written by a different configuration."
            )
        for i, variable in enumerate(weights):
            variable.assign(data[f"weight_{i}"])
        for i, variable in enumerate(optimizer_vars):
            variable.assign(data[f"optimizer_{i}"])
        return json.loads(bytes(data["state"]).decode())
