"""The local cache of pulled presets: where it is, how entries are laid out, and the lock that guards them.

Layout, under ``$MFEF_ZOO_CACHE`` (default ``~/.cache/mfef_keras/zoo``)::

    <key>/                 one folder per zoo name (or archive name, for URLs)
        .lock              taken (fcntl) while an entry of this key is checked, fetched or removed
        <sha256>.tar.gz    the archive, renamed into place only after its size and sha256 matched
        <sha256>/          the preset unpacked from it, renamed into place only after it verified
"""

from __future__ import annotations

import fcntl
import fnmatch
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mfef_keras._regular_files import open_for_writing, refuse_linked_folder
from mfef_keras.zoo.errors import ZooError

ENV_CACHE = "MFEF_ZOO_CACHE"
ENV_OFFLINE = "MFEF_ZOO_OFFLINE"
DEFAULT_CACHE = "~/.cache/mfef_keras/zoo"
LOCK_FILE = ".lock"
# Temporary names start with a dot, so they never look like entries; leftovers of a killed
# process are removed by the next one that takes the lock.
PART_PREFIX = ".part-"
EXTRACT_PREFIX = ".extract-"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def cache_dir() -> Path:
    """The zoo cache folder (``$MFEF_ZOO_CACHE`` or ``~/.cache/mfef_keras/zoo``), created if missing."""
    path = Path(os.environ.get(ENV_CACHE) or DEFAULT_CACHE).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ZooError(f"Cannot create the zoo cache {path}: {error}. Set ${ENV_CACHE} to a writable folder.") from None
    return path


def is_offline(offline: bool | None = None) -> bool:
    """``offline`` if given, else whether ``$MFEF_ZOO_OFFLINE`` is set to 1/true/yes/on."""
    if offline is not None:
        return bool(offline)
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in ("1", "true", "yes", "on")


def cache_key(text: str) -> str:
    """A safe folder name for a zoo name or archive name."""
    key = re.sub(r"[^A-Za-z0-9._-]", "_", text).lstrip(".")
    return key or "archive"


@dataclass(frozen=True)
class CacheEntry:
    """One cached preset: its archive and the preset unpacked from it.

    Args:
        folder: the key's folder in the cache.
        sha256: the archive's sha256.

    Example:
        >>> entry = CacheEntry(Path("/cache/resnet8_mfef.digits_s0"), "ab" * 32)
        >>> entry.preset.name == "ab" * 32
        True
    """

    folder: Path
    sha256: str

    @property
    def key(self) -> str:
        return self.folder.name

    @property
    def archive(self) -> Path:
        return self.folder / f"{self.sha256}.tar.gz"

    @property
    def preset(self) -> Path:
        return self.folder / self.sha256

    def exists(self) -> bool:
        """Whether both the archive and its unpacked preset are in place."""
        return self.archive.is_file() and self.preset.is_dir()

    def remove(self) -> None:
        self.archive.unlink(missing_ok=True)
        shutil.rmtree(self.preset, ignore_errors=True)


def cache_entry(key: str, sha256: str) -> CacheEntry:
    """The cache entry of ``key`` (a zoo name) whose archive has hash ``sha256`` (it may not exist yet)."""
    return CacheEntry(cache_dir() / cache_key(key), sha256.lower())


def cached_entries(pattern: str = "*") -> list[CacheEntry]:
    """The entries in the cache whose key matches ``pattern`` (shell wildcards), complete or not."""
    entries = set()
    for folder in cache_dir().iterdir():
        if folder.is_dir() and fnmatch.fnmatchcase(folder.name, pattern):
            for item in folder.iterdir():
                sha = item.name.removesuffix(".tar.gz")
                if _SHA256.match(sha):
                    entries.add(CacheEntry(folder, sha))
    return sorted(entries, key=lambda e: (e.key, e.sha256))


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold the exclusive lock of a key's cache folder; other processes and threads wait for it.

    Args:
        folder: the key's folder (created if missing).

    Raises:
        NotARegularFile: ``folder`` is a symbolic link; everything done under the lock (downloads, unpacking,
            removing damaged copies and leftovers) would happen wherever it points.
    """
    refuse_linked_folder(folder, fix="Remove the link; mfef pulls the preset again when it is needed.")
    folder.mkdir(parents=True, exist_ok=True)
    # Never through a link: opening for writing a link planted in a shared cache would create or touch its target.
    with open(open_for_writing(folder / LOCK_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "ab") as handle:
        # flock locks belong to the open file, so threads of one process exclude each other too.
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_leftovers(folder: Path) -> None:
    """Delete temporary files of interrupted pulls; call only while holding the folder's lock."""
    for item in folder.iterdir():
        if item.name.startswith(PART_PREFIX):
            item.unlink(missing_ok=True)
        elif item.name.startswith(EXTRACT_PREFIX):
            shutil.rmtree(item, ignore_errors=True)
