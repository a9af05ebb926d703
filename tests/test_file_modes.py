"""A run's and an export's files get the modes the umask gives, not `tempfile`'s private 0600/0700."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from tests.helpers import subprocess_env

TINY = ["--epochs", "1", "--train-limit", "64", "--batch-size", "32", "--base-width", "4", "--no-progress"]


def _mfef_under_umask(umask: int, *args: str, env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mfef_keras.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: os.umask(umask),
    )
    assert result.returncode == 0, result.stdout + result.stderr


# A run and an export in child processes per umask (18 s each): out of the default suite (kept under 10 minutes),
# run by .ci/run's slow step.
@pytest.mark.slow
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_run_and_export_follow_the_umask(umask, tmp_path):
    env = subprocess_env(MFEF_ZOO_OFFLINE="1", MFEF_ZOO_CACHE=str(tmp_path / "cache"))
    run, export = tmp_path / "run", tmp_path / "export"
    _mfef_under_umask(umask, "train", "--run-dir", str(run), *TINY, "--lr-milestones", "", env=env)
    _mfef_under_umask(umask, "export", str(run), "--out", str(export), env=env)

    outputs = [
        run / "config.json",
        run / "checkpoint.npz",
        run / "best_student",
        run / "best_student" / "model.keras",
        run / "best_student" / "metadata.json",
        export,
        *export.iterdir(),
    ]
    for path in outputs:
        mode = stat.S_IMODE(path.stat().st_mode)
        expected = (0o777 if path.is_dir() else 0o666) & ~umask
        assert mode == expected, f"{path.relative_to(tmp_path)} is {oct(mode)}, expected {oct(expected)}"
    assert not list(tmp_path.glob("**/.*tmp*")), "a temporary file was left behind"
