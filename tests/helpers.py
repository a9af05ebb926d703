"""Helpers shared by the tests: keras-hub-style layer checks and the environment of child processes."""

from __future__ import annotations

import inspect
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def check_layer(layer: keras.layers.Layer, input_shapes, expected_output_shape, tmp_path) -> None:
    """Output shape, get_config round trip, `.keras` save/reload and a one-step fit for ``layer``."""
    shapes = _as_list(input_shapes) if isinstance(input_shapes, list) else [input_shapes]
    rng = np.random.default_rng(0)
    data = [rng.normal(size=shape).astype("float32") for shape in shapes]
    call_input = data if isinstance(input_shapes, list) else data[0]

    output = layer(call_input)
    assert tuple(output.shape) == tuple(expected_output_shape)

    config = layer.get_config()
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config
    own_arguments = inspect.signature(type(layer).__init__).parameters
    for key, value in config.items():
        if key in own_arguments and key not in ("name", "dtype", "trainable", "kwargs"):
            assert getattr(layer, key) == value, f"{key} is not kept as an attribute"

    inputs = [keras.Input(shape[1:]) for shape in shapes]
    fresh = layer.__class__.from_config(config)
    out = fresh(inputs if isinstance(input_shapes, list) else inputs[0])
    if len(out.shape) == 4:
        out = keras.layers.GlobalAveragePooling2D()(out)
    out = keras.layers.Dense(3)(out)
    model = keras.Model(inputs, out)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(model.predict(data, verbose=0), reloaded.predict(data, verbose=0), atol=1e-6)

    before = [w.numpy().copy() for w in fresh.trainable_weights]
    model.compile(
        optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    labels = rng.integers(0, 3, size=shapes[0][0])
    history = model.fit(data, labels, batch_size=shapes[0][0], epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    changed = [not np.allclose(b, w.numpy()) for b, w in zip(before, fresh.trainable_weights)]
    assert any(changed), "one fit step changed none of the layer's weights"


def subprocess_env(**overrides: str) -> dict[str, str]:
    """The environment for a child process of a test: this one's (private KERAS_HOME included), unbuffered.

    Args:
        **overrides: variables to set in the child.
    """
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2", **overrides)
    # A cluster description left in the environment would make every child wait for its workers.
    env.pop("TF_CONFIG", None)
    return env


def epoch_rows(run_dir: str | os.PathLike) -> list[dict]:
    """The per-epoch rows of a run directory's ``metrics.json``, first epoch first."""
    return json.loads((Path(run_dir) / "metrics.json").read_text())["epochs"]


def python_312() -> Path | None:
    """A Python 3.12 interpreter that runs: ``python3.12`` on the PATH, else one of pyenv's 3.12 builds; or None."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"), "versions")
    # pyenv's shim is on the PATH even where 3.12 is not one of pyenv's chosen versions, and then fails: each
    # candidate is run to be sure.
    candidates = [shutil.which("python3.12"), *sorted(pyenv.glob("3.12*/bin/python3.12"), reverse=True)]
    for candidate in filter(None, candidates):
        check = [candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 12)"]
        if subprocess.run(check, capture_output=True, timeout=60).returncode == 0:
            return Path(candidate)
    return None


def run_mfef(*args, timeout: int = 300) -> subprocess.CompletedProcess:
    """``mfef ARGS`` in a child process, as a user runs it; its output captured as text.

    Args:
        *args: the command line after ``mfef`` (paths are turned into strings).
        timeout: seconds before the child is killed.
    """
    command = [sys.executable, "-m", "mfef_keras.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), timeout=timeout)


def one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """The single ``Error:`` line of a refused command, which holds every fragment; no traceback anywhere."""
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def run_on_jax(script: str, timeout: int = 600) -> str:
    """Run Python ``script`` in a child process on the JAX backend, from the repository root; its stdout.

    The test process runs TensorFlow and Keras picks its backend once per process, so JAX checks run as
    scripts that print what their asserts reached.

    Args:
        script: the Python source to run.
        timeout: seconds before the child is killed.
    """
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=subprocess_env(KERAS_BACKEND="jax"),
        timeout=timeout,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def setting_command(study: Path, out: Path) -> tuple[list[str], dict[str, str]]:
    """The arguments after `mfef study` in ``study``/SETTING.md's bash block, with ``out`` for its --out (and for
    ``$S``), and the variables the block sets (``C=resnet20,resnet8``)."""
    block = (study / "SETTING.md").read_text().split("```bash\n")[1].split("\n```")[0]
    variables = {"S": str(out)}
    for line in block.splitlines():
        name, equals, value = line.partition("=")
        if equals and name.isidentifier():
            variables[name] = shlex.split(value, comments=True)[0]
    command = block[block.index("mfef study") :].replace("\\\n", " ").splitlines()[0]
    for name, value in variables.items():
        command = command.replace(f"${name}", value)
    arguments = shlex.split(command)[2:]
    arguments[arguments.index("--out") + 1] = str(out)
    return arguments, variables


def copy_run_results(run: Path, runs_dir: Path) -> None:
    """Copy what a committed study run keeps in git (its config, summary and per-epoch metrics) into ``runs_dir``."""
    target = runs_dir / run.name
    target.mkdir(parents=True)
    for name in ("config.json", "summary.json", "metrics.json"):
        shutil.copyfile(run / name, target / name)
