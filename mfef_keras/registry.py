"""One registration mechanism for every extension point: backbones, methods, datasets and export formats.

Each extension point is one `Registry`; an entry is added by decorating it (as timm's ``register_model``), and
everything that lists or checks the names (the CLI's choices and ``list-*`` commands, the config, the tests)
reads the registry, so each list exists once. Standard library only: the CLI reads registries at start-up.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from mfef_keras._names import unknown_name_error

T = TypeVar("T")


def natural_key(name: str) -> tuple:
    """Sort key reading the digits in ``name`` as numbers: resnet8 < resnet20 < resnet110, wrn16_2 < wrn16_10.

    Args:
        name: a registered (or any) name.
    """
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


class Registry(Generic[T]):
    """Named entries of one kind, each with a one-line description, in registration order.

    Args:
        kind: what the entries are (``"backbone"``, ``"dataset"``...), for error messages.

    Example:
        >>> formats = Registry("format")
        >>> @formats.register("csv", "Comma-separated values.")
        ... def write_csv(rows):
        ...     return "\\n".join(",".join(row) for row in rows)
        >>> formats.get("csv") is write_csv, formats.names(), formats.description("csv")
        (True, ['csv'], 'Comma-separated values.')
        >>> formats.get("xml")
        Traceback (most recent call last):
        ValueError: Unknown format 'xml'. Allowed: csv.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._descriptions: dict[str, str] = {}

    def register(self, name: str, description: str) -> Callable[[T], T]:
        """Decorator adding its argument as entry ``name``; the argument is returned unchanged.

        Args:
            name: the name users give.
            description: what the entry is, in one line (shown by the ``list-*`` commands).

        Raises:
            ValueError: an empty name or description, or ``name`` already registered to another entry.
        """
        if not name or not description or "\n" in description:
            raise ValueError(f"A {self.kind} needs a name and a one-line description; got {name!r}, {description!r}.")

        def decorate(entry: T) -> T:
            # The same entry again is allowed: re-importing a module that registers must not fail.
            if name in self._entries and self._entries[name] is not entry:
                raise ValueError(f"A {self.kind} named {name!r} is already registered.")
            self._entries[name] = entry
            self._descriptions[name] = description
            return entry

        return decorate

    def get(self, name: str) -> T:
        """The entry registered as ``name``.

        Raises:
            ValueError: no such entry; one line naming ``name``, the registered ones and the closest match.
        """
        if name not in self._entries:
            raise unknown_name_error(self.kind, name, self._entries)
        return self._entries[name]

    def description(self, name: str) -> str:
        """The one-line description of entry ``name`` (a ValueError as `get` for an unknown name)."""
        self.get(name)
        return self._descriptions[name]

    def names(self) -> list[str]:
        """Every registered name, in registration order."""
        return list(self._entries)

    def list(self, pattern: str = "*") -> list[str]:
        """The registered names matching the shell-style ``pattern`` (e.g. ``"wrn*"``), in natural order.

        Args:
            pattern: shell wildcards; resnet8 comes before resnet20, wrn16_2 before wrn16_8.
        """
        return sorted((name for name in self._entries if fnmatch.fnmatchcase(name, pattern)), key=natural_key)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
