"""The lock of a run directory: one trainer at a time writes it.

The lock is an ``flock`` on a file in the run directory, so the kernel releases it when its holder dies,
even by SIGKILL. The file records the holder (PID, host, start time) for the message of a trainer that
is refused, and is deleted on release; a record found under a free lock is thus one a killed trainer left.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mfef_keras._regular_files import open_for_writing
from mfef_keras.training.run_directory import LOCK_FILE, RunDirectoryError


class RunDirectoryBusy(RunDirectoryError):
    """Another trainer holds the run directory."""


def _holder(record: str) -> str:
    try:
        holder = json.loads(record)
        return f"PID {holder['pid']} on {holder['host']}, since {holder['since']}"
    except (ValueError, TypeError, KeyError):
        # Taken a moment ago: the holder locks first and writes its record after.
        return "a process that has not recorded its PID yet"


def _read(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode(errors="replace")


def _acquire(path: Path) -> int:
    """An open descriptor of ``path`` holding its lock.

    Raises:
        RunDirectoryBusy: another process holds the lock; the message names it.
        NotARegularFile: ``path`` is a link, a directory or a special file: a link would make the record
            overwrite whatever it points at.
    """
    while True:
        fd = open_for_writing(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(_read(fd))
            os.close(fd)
            raise RunDirectoryBusy(
                f"Run directory {path.parent} is in use by another trainer ({holder}). Wait for it to finish "
                f"or stop it, or choose another --run-dir. (Lock file: {path}.)"
            ) from None
        # The previous holder deletes the file as it releases it: a lock on a file no longer at ``path``
        # would exclude nobody, so open the one there now.
        try:
            if os.path.samestat(os.fstat(fd), os.lstat(path)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def lock_holder(run_dir: Path) -> str | None:
    """Who is training in ``run_dir`` now ("PID 12 on host, since ..."), or None when no trainer holds it.

    Args:
        run_dir: the run directory.
    """
    try:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        try:
            # A shared lock is refused while a trainer holds its exclusive one; taken, it is released at once
            # (by the close below), so a trainer starting meanwhile would be turned away only in that instant.
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(_read(fd))
        return None
    finally:
        os.close(fd)


@contextmanager
def run_directory_lock(run_dir: Path, echo: Callable[[str], None] = print) -> Iterator[None]:
    """Hold the lock of ``run_dir`` (which must exist) for the duration of the ``with`` block.

    Args:
        run_dir: the run directory.
        echo: where the note about a lock left by a killed trainer goes.

    Raises:
        RunDirectoryBusy: another trainer holds it; the message names its PID, host and start time.
    """
    path = Path(run_dir) / LOCK_FILE
    fd = _acquire(path)
    try:
        left = _read(fd)
        if left.strip():
            echo(f"Taking over the lock of {run_dir} from {_holder(left)}: that trainer stopped without releasing it.")
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        yield
    finally:
        # Deleted before the lock goes, so no one can lock this file once it stops guarding the directory.
        path.unlink(missing_ok=True)
        os.close(fd)
