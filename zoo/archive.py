"""Preset archives: reproducible ``.tar.gz`` packing and an extraction that cannot write outside its target.

Extraction checks every member itself instead of trusting `tarfile`'s filters: only
plain files and folders, relative paths without ``..``, no links, no devices, no
duplicates, every file listed in the archive's ``preset.json`` with the size it declares
there, and no more than ``$MFEF_ZOO_MAX_BYTES`` in all; all members are checked before
the first byte is written, and bytes are counted while copying.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import tarfile
import zlib
from pathlib import Path

from mfef_keras.atomic_files import atomic_file
from mfef_keras.zoo.download import CHUNK_BYTES, ENV_MAX_BYTES, max_bytes
from mfef_keras.zoo.errors import UnsafeArchiveError, ZooError
from mfef_keras.zoo.preset import PRESET_FILE

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
# preset.json lists a few files; anything larger is not one.
INDEX_MAX_BYTES = 1 << 20
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
    # 0644 whatever the umask: the archive is meant to be shared.
    with atomic_file(archive_path, mode=0o644) as handle:
        with gzip.GzipFile(filename="", mode="wb", fileobj=handle, mtime=0) as zipped:
            with tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
                folder = tarfile.TarInfo(root)
                folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, 0
                tar.addfile(folder)
                for name in names:
                    info = tarfile.TarInfo(f"{root}/{name}")
                    info.size, info.mode, info.mtime = (preset_dir / name).stat().st_size, 0o644, 0
                    with open(preset_dir / name, "rb") as source:
                        tar.addfile(info, source)
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


def _checked_members(tar: tarfile.TarFile, limit: int) -> list[tuple[tuple[str, ...], tarfile.TarInfo]]:
    """Every member, checked as its header arrives, so that a huge declared size is refused before it is read past.

    Once ``preset.json`` is read (packed presets list it first), each later file is compared with it on arrival;
    files before it are compared at the end.
    """
    plan, seen, total, index, index_at = [], set(), 0, None, 0
    while (member := tar.next()) is not None:
        parts = _member_parts(member.name)
        if member.issym() or member.islnk():
            raise UnsafeArchiveError(
                f"Archive member {member.name!r} is a link (to {member.linkname!r}); presets hold no links."
            )
        if not (member.isreg() or member.isdir()) or member.issparse():
            raise UnsafeArchiveError(
                f"Archive member {member.name!r} is a device, pipe, sparse or other special file; presets hold none."
            )
        total += member.size if member.isreg() else 0
        if total > limit:
            raise UnsafeArchiveError(
                f"Archive member {member.name!r} brings the archive to {total} bytes unpacked, more than "
                f"${ENV_MAX_BYTES}={limit}; raise ${ENV_MAX_BYTES} if the preset is genuinely that large."
            )
        if not parts:
            continue
        if parts in seen:
            raise UnsafeArchiveError(f"Archive member {member.name!r} appears twice; refusing to overwrite it.")
        seen.add(parts)
        plan.append((parts, member))
        if index is None and member.isreg() and parts[-1] == PRESET_FILE and len(parts) <= 2:
            index, index_at = _read_index(tar, parts, member), len(plan) - 1
        elif index is not None:
            _check_listed(parts, member, *index)
    files = {parts for parts, member in plan if member.isreg()}
    for parts, member in plan:
        if any(parts[:i] in files for i in range(1, len(parts))):
            raise UnsafeArchiveError(f"Archive member {member.name!r} lies inside another member that is a file.")
    if index is None:
        raise ZooError(f"The archive holds no zoo preset: no {PRESET_FILE} at its top or in a single top-level folder.")
    for parts, member in plan[:index_at]:
        _check_listed(parts, member, *index)
    return plan


def _read_index(
    tar: tarfile.TarFile, parts: tuple[str, ...], member: tarfile.TarInfo
) -> tuple[tuple[str, ...], dict[str, int], tarfile.TarInfo]:
    """(the preset's folder in the archive, file name -> size listed in ``preset.json``, its member)."""
    if member.size > INDEX_MAX_BYTES:
        raise UnsafeArchiveError(
            f"Archive member {member.name!r} declares {member.size} bytes; a {PRESET_FILE} has at most "
            f"{INDEX_MAX_BYTES}."
        )
    try:
        records = json.loads(tar.extractfile(member).read())["files"]
        sizes = {str(name): int(record["size"]) for name, record in records.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ZooError(f"Archive member {member.name!r} is not a valid {PRESET_FILE} ({error}).") from None
    return parts[:-1], sizes, member


def _check_listed(
    parts: tuple[str, ...],
    member: tarfile.TarInfo,
    folder: tuple[str, ...],
    sizes: dict[str, int],
    index: tarfile.TarInfo,
) -> None:
    """Refuse a file that ``preset.json`` does not list beside it with the very size its header declares."""
    if not member.isreg() or member is index:
        return
    if parts[:-1] != folder or parts[-1] not in sizes:
        raise UnsafeArchiveError(
            f"Archive member {member.name!r} is not listed in {index.name}; a preset holds only the files it lists."
        )
    if member.size != sizes[parts[-1]]:
        raise UnsafeArchiveError(
            f"Archive member {member.name!r} declares {member.size} bytes but {index.name} lists "
            f"{sizes[parts[-1]]}; refusing to unpack it."
        )


def _copy_member(source, out, member: tarfile.TarInfo) -> None:
    """Copy a member's bytes, stopping at the first byte beyond the size its header declares."""
    written = 0
    while chunk := source.read(CHUNK_BYTES):
        written += len(chunk)
        if written > member.size:
            raise UnsafeArchiveError(
                f"Archive member {member.name!r} holds more than the {member.size} bytes it declares; "
                "refusing to write the rest."
            )
        out.write(chunk)


def extract_archive(archive: str | os.PathLike, target: str | os.PathLike) -> None:
    """Extract the preset archive ``archive`` into the empty or new folder ``target``, refusing anything unsafe.

    Args:
        archive: a ``.tar.gz`` file holding a preset (its ``preset.json`` lists every other file with its size).
        target: the folder to extract into; nothing is ever written outside it. Extract into a
            staging folder: a member caught holding more bytes than declared leaves a partial file.

    Raises:
        UnsafeArchiveError: a member is absolute, contains ``..``, is a link, a device, a
            duplicate or inside a file member, is not listed in ``preset.json`` with the size its
            header declares, or the files add up to more than ``$MFEF_ZOO_MAX_BYTES``; raised
            before anything is written.
        ValueError: ``$MFEF_ZOO_MAX_BYTES`` is not a positive whole number.
        ZooError: the file is not a readable gzip-compressed tar archive, or holds no ``preset.json``.
    """
    limit = max_bytes()
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(target)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for parts, member in _checked_members(tar, limit):
                destination = target.joinpath(*parts)
                # The names are checked already; resolving the path as well costs little and would catch a link.
                if os.path.commonpath([root, os.path.realpath(destination)]) != root:
                    raise UnsafeArchiveError(f"Archive member {member.name!r} would be written outside {target}.")
                if member.isdir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as source, open(destination, "xb") as out:
                    _copy_member(source, out, member)
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
