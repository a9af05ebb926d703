"""Preset archives: reproducible ``.tar.gz`` packing and an extraction that cannot write outside its target.

Extraction checks every member itself instead of trusting `tarfile`'s filters: only
plain files and folders, relative paths without ``..``, no links, no devices, no
duplicates; all members are checked before the first byte is written.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path

from mfef_keras.zoo.errors import UnsafeArchiveError, ZooError
from mfef_keras.zoo.preset import PRESET_FILE

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


def is_archive_name(name: str) -> bool:
    """Whether a file name or URL path names a preset archive (``.tar.gz`` or ``.tgz``)."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def pack_preset(preset_dir: str | os.PathLike, archive_path: str | os.PathLike) -> Path:
    """Pack a preset directory into ``archive_path`` under one top-level folder named like the directory.

    The archive is reproducible (fixed times, owners and modes, no name in the gzip
    header) and lists ``preset.json`` first, so it can be read without unpacking the rest.

    Args:
        preset_dir: the preset directory (flat, plain files).
        archive_path: the ``.tar.gz`` to write; replaced atomically.
    """
    preset_dir, archive_path = Path(preset_dir), Path(archive_path)
    root = preset_dir.name
    names = sorted((p.name for p in preset_dir.iterdir()), key=lambda n: (n != PRESET_FILE, n))
    archive_path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=archive_path.parent, prefix=f".{archive_path.name}.", delete=False)
    try:
        with handle, gzip.GzipFile(filename="", mode="wb", fileobj=handle, mtime=0) as zipped:
            with tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
                folder = tarfile.TarInfo(root)
                folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, 0
                tar.addfile(folder)
                for name in names:
                    info = tarfile.TarInfo(f"{root}/{name}")
                    info.size, info.mode, info.mtime = (preset_dir / name).stat().st_size, 0o644, 0
                    with open(preset_dir / name, "rb") as source:
                        tar.addfile(info, source)
        # Temporary files are private (0600); the archive is meant to be shared.
        os.chmod(handle.name, 0o644)
        os.replace(handle.name, archive_path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return archive_path


def _member_parts(name: str) -> tuple[str, ...]:
    """The path components of a member name, refusing absolute paths and ``..``."""
    if not name or "\x00" in name or "\\" in name:
        raise UnsafeArchiveError(f"Archive member {name!r} has an invalid name.")
    if name.startswith("/") or _WINDOWS_DRIVE.match(name):
        raise UnsafeArchiveError(f"Archive member {name!r} is an absolute path; refusing to extract it.")
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise UnsafeArchiveError(f"Archive member {name!r} contains '..' and would escape the target folder.")
    return parts


def _checked_members(tar: tarfile.TarFile) -> list[tuple[tuple[str, ...], tarfile.TarInfo]]:
    plan, seen = [], set()
    for member in tar.getmembers():
        parts = _member_parts(member.name)
        if member.issym() or member.islnk():
            raise UnsafeArchiveError(
                f"Archive member {member.name!r} is a link (to {member.linkname!r}); presets hold no links."
            )
        if not (member.isreg() or member.isdir()):
            raise UnsafeArchiveError(
                f"Archive member {member.name!r} is a device, pipe or other special file; presets hold none."
            )
        if not parts:
            continue
        if parts in seen:
            raise UnsafeArchiveError(f"Archive member {member.name!r} appears twice; refusing to overwrite it.")
        seen.add(parts)
        plan.append((parts, member))
    files = {parts for parts, member in plan if member.isreg()}
    for parts, member in plan:
        if any(parts[:i] in files for i in range(1, len(parts))):
            raise UnsafeArchiveError(f"Archive member {member.name!r} lies inside another member that is a file.")
    return plan


def extract_archive(archive: str | os.PathLike, target: str | os.PathLike) -> None:
    """Extract ``archive`` into the empty or new folder ``target``, refusing anything unsafe.

    Args:
        archive: a ``.tar.gz`` file.
        target: the folder to extract into; nothing is ever written outside it.

    Raises:
        UnsafeArchiveError: a member is absolute, contains ``..``, is a link, a device, a
            duplicate or inside a file member; raised before anything is written.
        ZooError: the file is not a readable gzip-compressed tar archive.
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(target)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for parts, member in _checked_members(tar):
                destination = target.joinpath(*parts)
                # The names are checked already; resolving the path as well costs little and would catch a link.
                if os.path.commonpath([root, os.path.realpath(destination)]) != root:
                    raise UnsafeArchiveError(f"Archive member {member.name!r} would be written outside {target}.")
                if member.isdir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as source, open(destination, "xb") as out:
                    shutil.copyfileobj(source, out)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise ZooError(f"{archive} is not a readable .tar.gz archive: {error}") from None


def find_preset_root(folder: str | os.PathLike) -> Path:
    """The preset inside an extracted archive: ``folder`` itself or its single top-level subfolder."""
    folder = Path(folder)
    if (folder / PRESET_FILE).is_file():
        return folder
    children = list(folder.iterdir())
    if len(children) == 1 and (children[0] / PRESET_FILE).is_file():
        return children[0]
    raise ZooError(
        f"The archive holds no zoo preset: no {PRESET_FILE} at its top or in a single top-level folder "
        f"(found: {', '.join(sorted(c.name for c in children)) or 'nothing'})."
    )


def member_sha256(archive: str | os.PathLike, file_name: str) -> str | None:
    """The sha256 of the preset file ``file_name`` inside ``archive`` (at the top or one folder down), or None."""
    try:
        # Stream mode stops reading at the member, and packed presets list preset.json first.
        with tarfile.open(archive, "r|gz") as tar:
            for member in tar:
                parts = _member_parts(member.name)
                if member.isreg() and len(parts) <= 2 and parts[-1] == file_name:
                    return hashlib.sha256(tar.extractfile(member).read()).hexdigest()
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise ZooError(f"{archive} is not a readable .tar.gz archive: {error}") from None
    return None
