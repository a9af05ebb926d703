"""An export onto a full disk fails in one line naming --out, removes what it wrote and leaves the source as it was,
whichever library's writer ran out of space (TensorFlow's SavedModel writer raises its own error, not OSError)."""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mfef_keras._outputs import writing_to
from mfef_keras.data import dataset_info
from mfef_keras.models import get_backbone
from mfef_keras.student_card import StudentCard
from mfef_keras.student_dir import save_student_dir
from tests.helpers import subprocess_env


class ResourceExhaustedError(Exception):
    """Stands for TensorFlow's error of that name, which is no OSError."""


def test_a_library_error_that_says_the_disk_is_full_becomes_one_about_the_target(tmp_path):
    with pytest.raises(OSError) as caught:
        with writing_to(tmp_path / "out"):
            raise ResourceExhaustedError(f"{tmp_path}/.out.partial-x/saved_model.pb.tmp1; No space left on device")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / "out")
    # Out of memory is not a disk failure: it keeps its own error.
    with pytest.raises(ResourceExhaustedError, match="OOM"):
        with writing_to(tmp_path / "out"):
            raise ResourceExhaustedError("OOM when allocating tensor with shape [1 << 40]")


@pytest.fixture
def small_disk(tmp_path):
    """A 120 kB tmpfs: room for the ONNX model, not for the SavedModel. Mounting needs root."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command to make a small filesystem")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=120k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# About 10 s on 2 cores: slow, run by .ci/run step 3, to keep the default suite under 10 minutes; training onto a
# full disk (test_train_cli) stays.
@pytest.mark.slow
def test_export_onto_a_full_disk_says_so_and_leaves_nothing(tmp_path, small_disk):
    model = get_backbone("resnet8", 10, input_shape=(32, 32, 1), base_width=4)
    source = save_student_dir(tmp_path / "student", model, StudentCard(dataset_info("digits")))
    before = _tree(source)
    command = [sys.executable, "-m", "mfef_keras.cli", "export", source, "--format", "all", "--out", small_disk / "ex"]
    result = subprocess.run(list(map(str, command)), capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [
        f"Error: Cannot write {small_disk / 'ex'}: no space left on the device (ENOSPC); free some space or write "
        "elsewhere."
    ]
    assert list(small_disk.iterdir()) == []
    assert _tree(source) == before
