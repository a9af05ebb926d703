"""Commands that neither build nor run a Keras model start without importing TensorFlow or Keras."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import subprocess_env

# Runs the CLI in this process, then fails if it imported the heavy frameworks (seconds of start-up).
_RUN_CLI = """
import sys
from mfef_keras.cli import main
try:
    main(sys.argv[1:], prog_name="mfef")
except SystemExit as exit:
    assert not exit.code, exit.code
heavy = [name for name in ("tensorflow", "keras") if name in sys.modules]
assert not heavy, f"imported {heavy}"
"""


def _run_cli(*args: str, tmp_path) -> str:
    env = subprocess_env(MFEF_ZOO_OFFLINE="1", MFEF_ZOO_CACHE=str(tmp_path / "cache"))
    result = subprocess.run(
        [sys.executable, "-c", _RUN_CLI, *args], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize(
    "args",
    [("--help",), ("zoo", "list"), ("zoo", "info", "resnet8_mfef.digits_s0"), ("predict", "--help"), ("eval", "-h")],
)
def test_command_imports_no_tensorflow(args, tmp_path):
    assert _run_cli(*args, tmp_path=tmp_path)


def test_list_backbones_in_natural_order_without_tensorflow(tmp_path):
    names = _run_cli("list-backbones", tmp_path=tmp_path).split()
    resnets = [name for name in names if name.startswith("resnet")]
    assert resnets == ["resnet8", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]
    wrns = [tuple(int(part) for part in name[3:].split("_")) for name in names if name.startswith("wrn")]
    assert wrns == sorted(wrns) and (28, 10) in wrns
    assert _run_cli("list-backbones", "vgg*", tmp_path=tmp_path).split() == ["vgg8", "vgg11", "vgg13", "vgg16"]


def test_a_registered_backbone_is_listed_by_the_cli_and_built_by_the_models(tmp_path):
    # In a fresh process: the registration must not outlive the test.
    script = (
        "from mfef_keras.cli import main\n"
        "from mfef_keras.models import get_backbone, register_backbone\n"
        "from mfef_keras.models.resnet_cifar import resnet_cifar_recipe\n"
        "register_backbone('tinynet', 'A ResNet-8 for the test.')(lambda make: resnet_cifar_recipe(8, 4, make))\n"
        "assert get_backbone('tinynet', 3).output.shape == (None, 3)\n"
        "main(['list-backbones', 'tiny*'], prog_name='mfef')\n"
    )
    env = subprocess_env(MFEF_ZOO_OFFLINE="1", MFEF_ZOO_CACHE=str(tmp_path / "cache"))
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.stdout.split() == ["tinynet"], result.stderr
