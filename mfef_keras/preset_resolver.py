"""How the core turns a published preset's name into its folder, without importing the zoo.

The zoo is built on the core, so the core may not import it; yet every SOURCE a command takes (a run, a
student, a ``.keras`` file) may also be a zoo name. The package's entry point (``mfef_keras/__init__.py``)
installs the zoo's resolver here, and `mfef_keras.training.model_source` asks this module for it.
"""

from __future__ import annotations

import os
from collections.abc import Callable

PresetResolver = Callable[[str], str | os.PathLike]


def _no_resolver(source: str) -> str | os.PathLike:
    raise LookupError("no preset resolver is installed")


_resolver: PresetResolver = _no_resolver


def install_preset_resolver(resolver: PresetResolver) -> None:
    """Make ``resolver`` the one that `resolve_preset` calls.

    Args:
        resolver: maps a zoo name, preset archive path or URL to the folder of the verified preset; raises
            when it cannot.
    """
    global _resolver
    _resolver = resolver


def resolve_preset(source: str) -> str | os.PathLike:
    """The folder of the preset ``source`` names, from the installed resolver.

    Args:
        source: a zoo name, or a preset archive path or URL.

    Raises:
        LookupError: no resolver is installed.
    """
    return _resolver(source)
