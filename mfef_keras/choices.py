"""The names a user chooses from: built-in backbones, methods, topologies and MFEF ablations.

Plain data and the standard library only, so the CLI lists and checks them without importing
Keras or TensorFlow (which take seconds); the model registry builds its backbones from this table.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable

METHODS = ("mfef", "ffl", "dml", "independent")
FUSION_METHODS = ("mfef", "ffl")
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
