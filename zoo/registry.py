"""Looking up published students by name: wildcard listing, details, and names refused with a suggestion."""

from __future__ import annotations

import difflib
import fnmatch

from mfef_keras.zoo.cache import cache_entry
from mfef_keras.zoo.manifest import ENV_MANIFEST, load_registry


def list_models(pattern: str = "*") -> list[str]:
    """Names of the published students matching a shell-style ``pattern``, sorted.

    Args:
        pattern: fnmatch wildcards, e.g. ``"resnet*"`` or ``"*.digits_*"``.
    """
    return sorted(name for name in load_registry() if fnmatch.fnmatchcase(name, pattern))


def find_entry(name: str) -> tuple[str, dict]:
    """The one registered student that ``name`` (a name, or a pattern matching exactly one) names.

    Raises:
        ValueError: no student or several students match; the message suggests the closest names.
    """
    registry = load_registry()
    if name in registry:
        return name, registry[name]
    matches = sorted(n for n in registry if fnmatch.fnmatchcase(n, name))
    if len(matches) == 1:
        return matches[0], registry[matches[0]]
    if matches:
        raise ValueError(f"{name!r} matches several zoo students: {', '.join(matches)}. Give one name.")
    if not registry:
        raise ValueError(
            f"Unknown zoo student {name!r}: no manifest lists any student yet "
            f"(add manifests with ${ENV_MANIFEST}, or pass a preset folder or archive URL)."
        )
    message = f"Unknown zoo student {name!r}."
    close = difflib.get_close_matches(name, registry, n=3, cutoff=0.6)
    if close:
        message += f" Did you mean {' or '.join(repr(c) for c in close)}?"
    known = sorted(registry)
    message += f" Known students: {', '.join(known[:20])}{', ...' if len(known) > 20 else ''}."
    raise ValueError(message)


def model_info(name: str) -> dict:
    """What the manifest says about a published student, and whether (and where) it is cached.

    Args:
        name: a zoo name (or a pattern matching exactly one).

    Returns:
        The manifest entry (with ``source``, its archive's URL) plus ``name``, ``cached`` and
        ``cached_path`` (the cached preset folder, or None).
    """
    name, entry = find_entry(name)
    cached = cache_entry(name, entry["sha256"])
    present = cached.exists()
    return {"name": name, **entry, "cached": present, "cached_path": str(cached.preset) if present else None}
