"""Where commands write: output folders checked before any work, and disk failures told in one line.

Standard library and click only: ``mfef predict`` uses it in the slim inference image.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from mfef_keras._regular_files import NotARegularFile, refuse_linked_folder

# Failures of the disk or of its permissions rather than of the program: the user fixes them by
# freeing space or writing elsewhere, so they are told which path failed and why, without a traceback.
# errno -> (what failed, why, what to do).
DISK_ERRNOS = {
    errno.ENOSPC: ("write", "no space left on the device", "free some space or write elsewhere"),
    errno.EDQUOT: ("write", "disk quota exceeded", "free some space or write elsewhere"),
    errno.EROFS: ("write", "the filesystem is read-only", "write elsewhere"),
    errno.EACCES: ("access", "permission denied", "check its permissions or use another path"),
    errno.EPERM: ("access", "operation not permitted", "check its permissions or use another path"),
}


def check_output_dir(
    path: str | os.PathLike,
    option: str = "--out",
    allowed: str = "a new or existing directory",
    error: type[Exception] = ValueError,
) -> Path:
    """Refuse an output folder that is a symbolic link, or is (or lies under) something other than a directory.

    Nothing is created: commands call this before their work, so a bad ``--out`` costs nothing. A link is
    refused even to a folder: an output folder may be a default inside a downloaded or shared run directory.

    Args:
        path: the output folder.
        option: how the user gave it, for the message.
        allowed: what ``option`` may be, for the message.
        error: the exception type to raise (a command's own user-error type).

    Returns:
        ``path`` as a `Path`.
    """
    path = Path(path)
    try:
        refuse_linked_folder(path, fix=f"Give the folder it points at, or another {option}.")
    except NotARegularFile as link:
        raise error(f"{option} {link}") from None
    for place in (path, *path.parents):
        if place.is_dir():
            return path
        if place.exists():
            where = "" if place == path else f" (its parent {place} is a file)"
            raise error(f"{option} {path} is not a directory{where}; {option} must be {allowed}.")
    return path


def disk_error_message(error: OSError) -> str | None:
    """One line naming the path and the cause of a disk failure (full, read-only, denied); None for other errors.

    Args:
        error: the error raised by the filesystem.
    """
    if error.errno not in DISK_ERRNOS:
        return None
    verb, cause, hint = DISK_ERRNOS[error.errno]
    where = error.filename if error.filename is not None else "a file"
    return f"Cannot {verb} {where}: {cause} ({errno.errorcode[error.errno]}); {hint}."


def _disk_errno(error: Exception) -> int | None:
    """The `DISK_ERRNOS` code of ``error``, or None.

    An OSError carries its own; other libraries' errors only say it: TensorFlow writes a SavedModel with its
    own file layer and raises ``ResourceExhaustedError: <path>; No space left on device`` on a full disk.
    """
    if isinstance(error, OSError):
        return error.errno if error.errno in DISK_ERRNOS else None
    text = str(error)
    return next((code for code in DISK_ERRNOS if os.strerror(code) in text), None)


@contextmanager
def writing_to(target: str | os.PathLike) -> Iterator[None]:
    """Report a disk failure while writing ``target`` (through temporary files beside it) as one of ``target``.

    Args:
        target: the output the user named; the temporary names would only puzzle them.
    """
    try:
        yield
    except Exception as error:
        code = _disk_errno(error)
        if code is None:
            raise
        # OSError(errno, ...) builds the matching subclass (PermissionError...), so callers catch what they did.
        raise OSError(code, os.strerror(code), str(target)) from error


@contextmanager
def user_errors(*kinds: type[Exception]) -> Iterator[None]:
    """Turn the user's errors (``kinds``), disk failures and non-regular files into an ``Error: ...`` line, exit 1.

    Args:
        *kinds: exception types whose message is meant for the user as it is.
    """
    kinds = (*kinds, NotARegularFile)
    try:
        yield
    except (*kinds, OSError) as error:
        message = disk_error_message(error) if isinstance(error, OSError) else None
        if message is None and not isinstance(error, kinds):
            raise
        raise click.ClickException(message or str(error)) from None
