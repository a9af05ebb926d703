"""The atomic writers: a file or a folder appears whole with the mode asked for, and a failure leaves nothing."""

from __future__ import annotations

import os
import stat

import pytest

from mfef_keras.atomic_files import atomic_file, staged_directory, write_bytes_atomic


def test_a_file_gets_the_mode_asked_for_whatever_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        write_bytes_atomic(tmp_path / "shared", b"x", mode=0o644)
        write_bytes_atomic(tmp_path / "private", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o600


def test_a_failed_file_keeps_the_old_content_and_leaves_no_temporary_file(tmp_path):
    (tmp_path / "file").write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(tmp_path / "file") as handle:
        handle.write(b"new")
        raise RuntimeError
    assert [p.name for p in tmp_path.iterdir()] == ["file"] and (tmp_path / "file").read_bytes() == b"old"


def test_a_staged_folder_replaces_the_old_one_and_a_failed_one_leaves_nothing(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old").write_text("")
    with staged_directory(target, mode=0o755) as staging:
        assert staging.parent == tmp_path and staging.name.startswith(".out.")
        (staging / "new").write_text("")
    assert [p.name for p in target.iterdir()] == ["new"] and stat.S_IMODE(target.stat().st_mode) == 0o755
    with pytest.raises(RuntimeError), staged_directory(target) as staging:
        (staging / "newer").write_text("")
        raise RuntimeError
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and [p.name for p in target.iterdir()] == ["new"]


def test_an_install_that_moves_out_part_of_the_staging_folder_leaves_no_rest(tmp_path):
    def install_inner(staging, target):
        os.replace(staging / "inner", target)

    with staged_directory(tmp_path / "out", prefix=".extract-", install=install_inner) as staging:
        (staging / "inner").mkdir()
        (staging / "inner" / "file").write_text("")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (tmp_path / "out" / "file").is_file()
