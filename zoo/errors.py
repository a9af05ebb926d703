"""The zoo's exceptions: each says in plain words what went wrong and what to do."""

from __future__ import annotations


class ZooError(Exception):
    """Base class of the zoo's errors."""


class IntegrityError(ZooError, ValueError):
    """A file whose size or sha256 is not the recorded one.

    Args:
        message: the full explanation.
        file: the file that failed the check.
        expected: the recorded sha256 (or size).
        actual: the sha256 (or size) found.
    """

    def __init__(self, message: str, *, file: str, expected: str | None = None, actual: str | None = None):
        super().__init__(message)
        self.file = file
        self.expected = expected
        self.actual = actual


class UnsafeArchiveError(ZooError, ValueError):
    """An archive member that could write outside the extraction target, or is not a plain file or folder."""


class DownloadError(ZooError, ConnectionError):
    """A download that failed: no connection, a timeout, or an HTTP error."""


class OfflineError(ZooError, FileNotFoundError):
    """Offline mode is on and the requested student is not in the cache."""
