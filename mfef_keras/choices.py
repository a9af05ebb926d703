"""The names a user chooses from: built-in backbones, topologies and MFEF ablations (methods: their registry).

Plain data and the standard library only, so the CLI lists and checks them without importing
Keras or TensorFlow (which take seconds); the model registry builds its backbones from this table.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence

TOPOLOGIES = ("independent", "shared_trunk")
ABLATIONS = ("multi_scale", "attention", "channel_attention", "spatial_attention")

# Backbone name -> (family, the family builder's positional arguments).
BACKBONES: dict[str, tuple[str, tuple[int, ...]]] = {
    **{f"resnet{depth}": ("resnet", (depth,)) for depth in (8, 20, 32, 44, 56, 110)},
    **{
        f"wrn{depth}_{widen}": ("wrn", (depth, widen))
        for depth, widen in ((10, 1), (16, 1), (16, 2), (16, 4), (16, 8), (28, 4), (28, 10), (40, 1), (40, 2), (40, 4))
    },
    **{f"vgg{depth}": ("vgg", (depth,)) for depth in (8, 11, 13, 16)},
}


def natural_key(name: str) -> tuple:
    """Sort key reading the digits in ``name`` as numbers: resnet8 < resnet20 < resnet110, wrn16_2 < wrn16_10.

    Args:
        name: a backbone (or any) name.
    """
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def matching_names(names: Iterable[str], pattern: str = "*") -> list[str]:
    """The ``names`` matching the shell-style ``pattern``, in natural order.

    Args:
        names: the names to filter.
        pattern: shell wildcards, e.g. ``"wrn*"``.
    """
    return sorted((name for name in names if fnmatch.fnmatchcase(name, pattern)), key=natural_key)


def cohort_names(name: str | Sequence[str], num_students: int | None = None) -> list[str]:
    """The backbone of each student: ``num_students`` (default 2) times one name, or the given names.

    Args:
        name: a backbone name, a comma-separated list of them, or a sequence of names.
        num_students: students of a single name; with several names, None or their number.
    """
    names = [part.strip() for part in name.split(",") if part.strip()] if isinstance(name, str) else list(name)
    if not names:
        raise ValueError(f"No backbone named: give one name or one per student, got {name!r}.")
    if len(names) == 1:
        count = 2 if num_students is None else int(num_students)
        if count < 1:
            raise ValueError(f"num_students must be >= 1, got {num_students!r}.")
        return names * count
    if num_students is not None and int(num_students) != len(names):
        raise ValueError(
            f"The cohort {','.join(names)} names {len(names)} students, but num_students is {num_students}: "
            "give one backbone name per student, or one name with --students N."
        )
    return names
