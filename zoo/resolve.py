"""From a source (a zoo name, a preset folder, an archive path or URL) to a verified preset folder on disk.

Every cached preset is re-checked on use: the archive against its pinned sha256, the
unpacked ``preset.json`` against the one in the archive, and every file against
``preset.json``. A cached copy that fails is removed and reported, never silently replaced.
"""

from __future__ import annotations

import os
import re
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

from mfef_keras.atomic_files import staged_directory
from mfef_keras.file_hashing import sha256_file
from mfef_keras.zoo.archive import extract_archive, find_preset_root, is_archive_name, member_sha256
from mfef_keras.zoo.cache import (
    ENV_OFFLINE,
    EXTRACT_PREFIX,
    CacheEntry,
    cache_dir,
    cache_key,
    cached_entries,
    is_offline,
    locked,
    remove_leftovers,
)
from mfef_keras.zoo.download import download, is_network_url
from mfef_keras.zoo.errors import IntegrityError, OfflineError, ZooError
from mfef_keras.zoo.hashing import check_file
from mfef_keras.zoo.preset import PRESET_FILE, verify_preset
from mfef_keras.zoo.registry import find_entry

_FRAGMENT = re.compile(r"^sha256=([0-9a-fA-F]{64})(?:&size=([0-9]+))?$")


@dataclass(frozen=True)
class Source:
    """Where a preset comes from.

    Args:
        label: how to name it in messages (the zoo name or the URL).
        key: its folder name in the cache.
        url: the archive's URL (``https``, ``http`` or ``file``); None for a local preset folder.
        sha256: the archive's expected sha256, if pinned.
        size: the archive's expected size, if known.
        folder: a local preset folder (then nothing is cached).

    Example:
        >>> Source(label="x", key="x", folder=Path("presets/x")).folder.name
        'x'
    """

    label: str
    key: str
    url: str | None = None
    sha256: str | None = None
    size: int | None = None
    folder: Path | None = None


def _fragment_pins(fragment: str, url: str) -> tuple[str | None, int | None]:
    """The (sha256, size) a URL fragment ``sha256=<hex>[&size=<bytes>]`` pins; (None, None) without one."""
    if not fragment:
        return None, None
    match = _FRAGMENT.match(fragment)
    if not match:
        raise ZooError(f"The URL fragment of {url} must be #sha256=<64 hex digits>[&size=<bytes>], got #{fragment}.")
    return match.group(1).lower(), None if match.group(2) is None else int(match.group(2))


def _local_source(path: Path, sha256: str | None, label: str) -> Source:
    if path.is_dir():
        return Source(label=label, key=cache_key(path.name), folder=path)
    if path.is_file() and is_archive_name(path.name):
        # A local archive needs no pinned hash: hash it now, so its cache entry can be found.
        pinned = sha256 or sha256_file(path)
        return Source(
            label=label,
            key=_archive_key(path.name),
            url=path.resolve().as_uri(),
            sha256=pinned,
            size=path.stat().st_size,
        )
    if path.exists():
        raise ZooError(f"{path} is neither a preset folder nor a .tar.gz preset archive.")
    raise FileNotFoundError(f"No preset folder or archive at {path}.")


def _archive_key(file_name: str) -> str:
    stem = re.sub(r"\.(tar\.gz|tgz)$", "", file_name, flags=re.IGNORECASE)
    return cache_key(stem)


def parse_source(source: str | os.PathLike, allow_unverified: bool = False) -> Source:
    """Decide what ``source`` is: a zoo name, a local preset folder or archive, or an archive URL.

    Args:
        source: a zoo name (or a pattern matching one), a preset folder, a ``.tar.gz``
            path, a ``file://`` URL, or an ``https://``/``http://`` URL of a ``.tar.gz``
            with ``#sha256=<hex>`` (unless ``allow_unverified``) and optionally ``&size=<bytes>``, which
            stops the download as soon as more bytes arrive.
        allow_unverified: accept a remote archive whose sha256 is not given.
    """
    if isinstance(source, os.PathLike):
        return _local_source(Path(source), None, str(source))
    text = str(source)
    if "://" in text:
        parts = urllib.parse.urlsplit(text)
        scheme = parts.scheme.lower()
        sha256, size = _fragment_pins(parts.fragment, text)
        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise ZooError(f"{text}: file:// URLs must name a local path (file:///path).")
            return _local_source(Path(urllib.request.url2pathname(parts.path)), sha256, text)
        if scheme not in ("https", "http"):
            raise ZooError(
                f"Unsupported source {text!r}: use a zoo name, a folder, or an https://, http:// or file:// URL."
            )
        if not is_archive_name(parts.path):
            raise ZooError(f"{text} does not name a preset archive (a .tar.gz file).")
        if sha256 is None and not allow_unverified:
            raise ZooError(
                f"Refusing {text}: remote archives need a pinned hash. Append #sha256=<hex> to the URL, "
                "or pass allow_unverified=True (--allow-unverified) to accept any content."
            )
        url = urllib.parse.urlunsplit(parts._replace(fragment=""))
        return Source(label=text, key=_archive_key(Path(parts.path).name), url=url, sha256=sha256, size=size)
    path = Path(text).expanduser()
    if path.exists() or os.sep in text or text.startswith(".") or is_archive_name(text):
        return _local_source(path, None, text)
    name, entry = find_entry(text)
    return Source(label=name, key=name, url=entry["source"], sha256=entry["sha256"], size=entry["size"])


def check_entry(entry: CacheEntry) -> None:
    """Re-hash a cache entry: its archive, its unpacked ``preset.json`` against the archive's, every file.

    Raises:
        IntegrityError: naming the file, the expected and the actual hash.
    """
    check_file(entry.archive, entry.sha256, label=f"cached archive {entry.archive}")
    if not entry.preset.is_dir():
        raise IntegrityError(f"Cache entry {entry.preset} was never unpacked.", file=str(entry.preset))
    expected = member_sha256(entry.archive, PRESET_FILE)
    index_file = entry.preset / PRESET_FILE
    actual = sha256_file(index_file) if index_file.is_file() else None
    if expected is None or actual != expected:
        raise IntegrityError(
            f"{PRESET_FILE} in {entry.preset} differs from the archive's: expected {expected}, got {actual}.",
            file=str(index_file),
            expected=expected,
            actual=actual,
        )
    verify_preset(entry.preset)


def _unpack(entry: CacheEntry) -> None:
    # The preset is the extracted folder itself or its one top-level subfolder: that is what is moved in.
    with staged_directory(entry.preset, prefix=EXTRACT_PREFIX, install=_install_preset_root) as staging:
        extract_archive(entry.archive, staging)
        verify_preset(find_preset_root(staging))


def _install_preset_root(staging: Path, preset: Path) -> None:
    os.replace(find_preset_root(staging), preset)


def _checked(entry: CacheEntry, label: str, hint: str = "") -> Path:
    try:
        check_entry(entry)
    except IntegrityError as error:
        entry.remove()
        raise IntegrityError(
            f"The cached copy of {label} is damaged and was removed: {error}{hint}",
            file=error.file,
            expected=error.expected,
            actual=error.actual,
        ) from None
    return entry.preset


def _fetch(source: Source, folder: Path, offline: bool, progress: bool, repair: bool) -> Path:
    """Under the folder's lock: reuse a good cached copy, or download, unpack and verify one."""
    remove_leftovers(folder)
    if source.sha256:
        entry = CacheEntry(folder, source.sha256)
        if entry.exists():
            hint = " Downloading a fresh copy." if repair else f" Pull it again: mfef zoo pull {source.label}"
            try:
                return _checked(entry, source.label, hint)
            except IntegrityError as error:
                if not repair:
                    raise
                warnings.warn(str(error), stacklevel=4)
        # Half an entry (its process was killed between the two renames) is discarded, never trusted.
        entry.remove()
    if offline and is_network_url(source.url):
        raise OfflineError(
            f"{source.label} is not in the zoo cache ({cache_dir()}) and offline mode is on "
            f"(${ENV_OFFLINE} or offline=True). Pull it once with network access: mfef zoo pull {source.label}"
        )
    temporary, actual = download(source.url, folder, source.sha256, source.size, progress, source.label)
    if source.sha256 is None:
        warnings.warn(
            f"{source.label} was accepted without a pinned hash; its sha256 is {actual}. "
            f"Pin it next time: {source.url}#sha256={actual}",
            stacklevel=4,
        )
    entry = CacheEntry(folder, actual)
    if entry.exists():
        # An unpinned URL whose content is cached already.
        temporary.unlink()
        return _checked(entry, source.label)
    entry.remove()
    os.replace(temporary, entry.archive)
    try:
        _unpack(entry)
    except BaseException:
        entry.remove()
        raise
    return entry.preset


def _resolve(
    source: str | os.PathLike, offline: bool | None, allow_unverified: bool, progress: bool, repair: bool
) -> Path:
    parsed = parse_source(source, allow_unverified)
    if parsed.folder is not None:
        verify_preset(parsed.folder)
        return parsed.folder
    folder = cache_dir() / parsed.key
    with locked(folder):
        return _fetch(parsed, folder, is_offline(offline), progress, repair)


def resolve_preset(
    source: str | os.PathLike,
    offline: bool | None = None,
    allow_unverified: bool = False,
    progress: bool = True,
) -> Path:
    """A verified local preset folder for ``source``, pulling it into the cache if needed.

    Args:
        source: a zoo name, a preset folder, a ``.tar.gz`` path, or a ``file://``,
            ``https://`` or ``http://`` archive URL (remote ones with ``#sha256=<hex>``).
        offline: never use the network (default: ``$MFEF_ZOO_OFFLINE``).
        allow_unverified: accept a remote archive without a pinned sha256.
        progress: show a download progress bar.

    Raises:
        OfflineError: offline, and the student is not cached (the message names it).
        IntegrityError: a download or a cached copy does not match its hashes.
        UnsafeArchiveError: the archive would write outside its folder or holds links or devices.
        DownloadError: the download failed (no connection, timeout, HTTP error).
        ValueError: an unknown or ambiguous zoo name (with suggestions).
    """
    return _resolve(source, offline, allow_unverified, progress, repair=False)


def pull(
    source: str | os.PathLike, offline: bool | None = None, allow_unverified: bool = False, progress: bool = True
) -> Path:
    """Make sure a good copy of a published student is in the cache; returns its preset folder.

    Unlike `resolve_preset`, which refuses a damaged cached copy, ``pull`` reports it (a
    warning naming the file and both hashes) and downloads a fresh one. A local preset
    folder is verified and returned as it is.

    Args:
        source: a zoo name, or any source `resolve_preset` takes.
        offline: never use the network (default: ``$MFEF_ZOO_OFFLINE``).
        allow_unverified: accept a remote archive without a pinned sha256.
        progress: show a download progress bar.
    """
    return _resolve(source, offline, allow_unverified, progress, repair=True)


def verify_cache(pattern: str = "*") -> list[tuple[CacheEntry, str | None]]:
    """Re-hash the cached presets; this only checks, it neither repairs nor removes anything (`pull` repairs).

    Args:
        pattern: zoo names (or the archive names URLs were cached under) to check, with shell wildcards.

    Returns:
        ``(entry, None)`` for each good entry and ``(entry, reason)`` for each damaged one.
    """
    results = []
    for entry in cached_entries(pattern):
        with locked(entry.folder):
            try:
                check_entry(entry)
                results.append((entry, None))
            except ZooError as error:
                results.append((entry, str(error)))
    return results
