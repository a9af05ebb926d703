"""Manifests: JSON files listing published students by name, with where their archive is and its hash.

The package ships ``manifest.json`` beside this module; more manifests can be added with
``$MFEF_ZOO_MANIFEST`` (paths separated by ``os.pathsep``); a later manifest's entry
replaces an earlier one of the same name. An entry points at its archive by ``url``
(``https://``, ``http://`` or ``file://``) or by ``path``, relative to the manifest's folder.
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from pathlib import Path

from mfef_keras._regular_files import read_regular
from mfef_keras.atomic_files import write_json_atomic
from mfef_keras.zoo.errors import ZooError

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "mfef-zoo-manifest/1"
ENV_MANIFEST = "MFEF_ZOO_MANIFEST"
URL_SCHEMES = ("https", "http", "file")
# arch_method.dataset_tag; the architecture (wrn16_2) and the dataset (fashion_mnist) may hold underscores, the
# method and the tag may not: the method is what precedes the dot, the tag what follows the last underscore.
NAME_PATTERN = re.compile(
    r"^(?P<arch>[a-z0-9]+(?:_[a-z0-9]+)*)_(?P<method>[a-z0-9]+)"
    r"\.(?P<dataset>[a-z0-9][a-z0-9_-]*)_(?P<tag>[a-z0-9]+)$"
)
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")


def parse_name(name: str) -> dict[str, str]:
    """Split a zoo name ``arch_method.dataset_tag`` (e.g. ``resnet8_mfef.digits_s0``) into its parts.

    Args:
        name: the zoo name.

    Raises:
        ValueError: the name does not have that form.
    """
    match = NAME_PATTERN.match(name)
    if not match:
        raise ValueError(
            f"{name!r} is not a zoo name. Names look like arch_method.dataset_tag in lower case, "
            "e.g. 'resnet8_mfef.digits_s0', 'resnet20_mfef.fashion_mnist_s0' or 'wrn16_2_dml.cifar100_seed1'."
        )
    return match.groupdict()


def shipped_manifest_path() -> Path:
    """The manifest that ships inside the package."""
    return Path(__file__).resolve().parent / MANIFEST_FILE


def manifest_paths() -> list[Path]:
    """The shipped manifest, then those named by ``$MFEF_ZOO_MANIFEST``."""
    extra = [Path(p).expanduser() for p in os.environ.get(ENV_MANIFEST, "").split(os.pathsep) if p.strip()]
    return [shipped_manifest_path(), *extra]


def _check_entry(path: Path, name: str, entry: dict) -> None:
    where = f"Manifest {path}, entry {name!r}"
    try:
        parse_name(name)
    except ValueError as error:
        raise ZooError(f"{where}: {error}") from None
    if not isinstance(entry, dict):
        raise ZooError(f"{where} must be a JSON object.")
    if not SHA256_PATTERN.match(str(entry.get("sha256", ""))):
        raise ZooError(f"{where} needs a 'sha256' of 64 lower-case hex digits.")
    if not isinstance(entry.get("size"), int) or entry["size"] < 0:
        raise ZooError(f"{where} needs a 'size' in bytes.")
    if ("url" in entry) == ("path" in entry):
        raise ZooError(f"{where} needs exactly one of 'url' and 'path'.")
    if "url" in entry and urllib.parse.urlsplit(str(entry["url"])).scheme not in URL_SCHEMES:
        raise ZooError(f"{where}: url {entry['url']!r} must start with one of {', '.join(URL_SCHEMES)}://.")
    if "path" in entry:
        relative = Path(str(entry["path"]))
        if relative.is_absolute() or ".." in relative.parts:
            raise ZooError(f"{where}: path {entry['path']!r} must stay inside the manifest's folder.")


def read_manifest(path: str | os.PathLike, missing_ok: bool = False) -> dict[str, dict]:
    """The entries of one manifest file, checked, by name.

    Args:
        path: the manifest file.
        missing_ok: return no entries (instead of raising) when the file does not exist.
    """
    path = Path(path)
    if path.is_dir():
        raise ZooError(
            f"Manifest {path} is a directory; ${ENV_MANIFEST} names manifest files, e.g. {path / MANIFEST_FILE}."
        )
    if not path.is_file():
        if missing_ok:
            return {}
        raise ZooError(f"Manifest {path} does not exist (check ${ENV_MANIFEST}).")
    try:
        data = json.loads(read_regular(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ZooError(f"Manifest {path} is not valid JSON: {error}") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or not isinstance(data.get("presets"), dict):
        raise ZooError(f"Manifest {path} is not a zoo manifest (expected format {MANIFEST_FORMAT!r} with 'presets').")
    for name, entry in data["presets"].items():
        _check_entry(path, name, entry)
    return data["presets"]


def entry_url(entry: dict, manifest: str | os.PathLike) -> str:
    """The URL of an entry's archive; a ``path`` entry becomes a ``file://`` URL beside its manifest."""
    if "url" in entry:
        return str(entry["url"])
    return (Path(manifest).resolve().parent / entry["path"]).as_uri()


def load_registry() -> dict[str, dict]:
    """Every listed student by name, each entry with its archive's ``source`` URL and its ``manifest``."""
    registry = {}
    for path in manifest_paths():
        for name, entry in read_manifest(path, missing_ok=path == shipped_manifest_path()).items():
            registry[name] = {**entry, "source": entry_url(entry, path), "manifest": str(path)}
    return registry


def write_manifest_entry(path: str | os.PathLike, name: str, entry: dict) -> None:
    """Add or replace entry ``name`` in the manifest file ``path`` (created if missing), atomically.

    Args:
        path: the manifest file.
        name: the zoo name.
        entry: the entry (``url`` or ``path``, ``sha256``, ``size`` and descriptive fields).
    """
    path = Path(path)
    _check_entry(path, name, entry)
    presets = read_manifest(path, missing_ok=True)
    presets[name] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    # 0644 whatever the umask: the manifest is meant to be shared.
    write_json_atomic(path, {"format": MANIFEST_FORMAT, "presets": dict(sorted(presets.items()))}, mode=0o644)
