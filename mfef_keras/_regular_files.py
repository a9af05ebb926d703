"""Only regular files are read, and no file is written through a symbolic link.

A FIFO or a device named like a data file would block a reader forever, or feed it without end. A link in a run,
study or export directory (which may come from a download or a shared disk) would make a write land on whatever
it points at, so files written in place there are opened with ``O_NOFOLLOW``; every other write goes through a
new temporary file and a rename, which replaces a link rather than following it. Neither protects a file whose
folder is a link, so every folder mfef writes in is checked with `refuse_linked_folder` first. Standard library
only: the zoo and ``mfef predict`` import it.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

_KINDS = {
    stat.S_ISDIR: "a directory",
    stat.S_ISFIFO: "a FIFO",
    stat.S_ISSOCK: "a socket",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
}


class NotARegularFile(ValueError):
    """A path that must be a regular file and is a directory, FIFO, socket, device, or a link where mfef writes."""


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS.items() if test(mode)), "a special file")


def _refused(path: str | os.PathLike, mode: int, what: str) -> NotARegularFile:
    return NotARegularFile(f"{path} is {_kind(mode)}, not a regular file; only a regular file can be {what}.")


def check_regular(path: str | os.PathLike, what: str = "read") -> Path:
    """Refuse ``path`` unless it is a regular file (or a link to one), without opening it.

    For readers that open by name themselves (onnxruntime, Keras, numpy); `open_regular` leaves no window
    between the check and the open.

    Args:
        path: the file.
        what: what is done with it, for the message ("read", "read as an image"...).

    Raises:
        FileNotFoundError: nothing is there.
        NotARegularFile: naming ``path`` and what it is.
    """
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise _refused(path, mode, what)
    return Path(path)


def open_regular(path: str | os.PathLike, what: str = "read") -> BinaryIO:
    """``path`` opened for binary reading, refused unless it is a regular file (or a link to one).

    The open does not block, so a FIFO without a writer is refused instead of waiting forever.

    Args:
        path: the file.
        what: what is done with it, for the message.

    Raises:
        FileNotFoundError, PermissionError: as `open` raises them.
        NotARegularFile: naming ``path`` and what it is.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except IsADirectoryError:
        raise _refused(path, stat.S_IFDIR, what) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _refused(path, mode, what)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike, what: str = "read") -> bytes:
    """The bytes of ``path``, refused unless it is a regular file (see `open_regular`)."""
    with open_regular(path, what) as handle:
        return handle.read()


def open_for_writing(path: str | os.PathLike, flags: int = os.O_RDWR | os.O_CREAT, mode: int = 0o666) -> int:
    """A descriptor of ``path`` opened in place (``os.open`` ``flags``) without following a link.

    Args:
        path: a file the package writes in place (a lock file).
        flags: ``os.open`` flags; ``O_NOFOLLOW`` and ``O_NONBLOCK`` are added.
        mode: the mode of a new file, before the umask.

    Raises:
        NotARegularFile: ``path`` is a symbolic link, a directory or another special file; the message names it
            and what to do.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as error:
        # ELOOP: a link (O_NOFOLLOW); EISDIR: a directory; ENXIO: a FIFO without a reader (O_NONBLOCK).
        if error.errno not in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            raise
        raise _not_writable(path, os.lstat(path).st_mode) from None
    try:
        file_mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(file_mode):
            raise _not_writable(path, file_mode)
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _not_writable(path: str | os.PathLike, mode: int) -> NotARegularFile:
    if stat.S_ISLNK(mode):
        return NotARegularFile(
            f"{path} is a symbolic link (to {os.readlink(path)}); mfef does not write through links, which could "
            "point at any file. Remove the link and run the command again."
        )
    return NotARegularFile(
        f"{path} is {_kind(mode)}, not a regular file; mfef writes a file there. Remove or rename it and run the "
        "command again."
    )


def refuse_linked_folder(
    folder: str | os.PathLike,
    below: str | os.PathLike | None = None,
    fix: str = "Remove the link and run the command again.",
) -> Path:
    """Refuse ``folder``, which mfef writes in, if it or a folder between ``below`` and it is a symbolic link.

    ``O_NOFOLLOW`` and renames guard only a path's last part: through a linked folder every write, and every
    removal of leftovers, would land in whatever it points at. Folders above ``below`` (or above ``folder``
    when ``below`` is None) are the user's own choice, such as a home folder on another disk, and stay allowed.

    Args:
        folder: a folder mfef creates or writes in (it need not exist).
        below: the folder the user named, for a ``folder`` that mfef lays out beneath it.
        fix: what the user can do, for the message.

    Returns:
        ``folder`` as a `Path`.

    Raises:
        NotARegularFile: naming the link, its target and ``fix``.
    """
    folder = Path(folder)
    chain = (folder, *folder.parents)
    places = [folder] if below is None else [p for p in chain if p.is_relative_to(below) and p != Path(below)]
    link = next((place for place in places if place.is_symlink()), None)
    if link is not None:
        raise NotARegularFile(
            f"{link} is a symbolic link (to {os.readlink(link)}); mfef does not write in a folder through a link, "
            f"which could lead anywhere. {fix}"
        )
    return folder
