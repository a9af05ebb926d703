import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- test-command -->\s*```(?:bash|sh)?\n(.+?)\n```", readme, re.S)
    assert block, "README.md must hold the test command in a fenced block after <!-- test-command -->"
    command = block.group(1).strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert command in ci
    # First, as a fresh machine would: nothing installed before it, which could hide what the command misses.
    before = ci[: ci.index('bash -c "$readme_command"')]
    commands = [line for line in before.splitlines() if not line.lstrip().startswith(("#", "readme_command="))]
    assert not [line for line in commands if "apt-get" in line or "pip install" in line or "pip3 install" in line]


# Slow (a wheel build and a virtualenv: about 20 s idle); .ci/run runs it.
@pytest.mark.slow
def test_wheel_installs_only_mfef_keras(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("mfef_keras-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    before = {p.name for p in site.iterdir()}
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, capture_output=True)
    added = {p.name for p in site.iterdir()} - before
    assert {name for name in added if not name.endswith(".dist-info")} == {"mfef_keras"}
    out = subprocess.run(
        [
            python,
            "-c",
            "import mfef_keras, mfef_keras.zoo, mfef_keras.export; print(mfef_keras.__version__)",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.stdout.strip() == __import__("mfef_keras").__version__
    assert (site / "mfef_keras" / "cli.py").is_file() and not (site / "cli.py").exists()


def test_bare_pytest_collects_the_tests_that_import_their_helpers():
    # tf2onnx installs a top-level `tests` package; a bare `pytest` must still find this one's helpers.
    pytest_bin = Path(sys.executable).parent / "pytest"
    result = subprocess.run(
        [str(pytest_bin), "--collect-only", "-q", "tests/test_layers.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "error" not in result.stdout.lower()
