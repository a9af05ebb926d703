"""Error messages that list what exists and suggest the closest match."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def unknown_name_error(kind: str, value: object, allowed: Iterable[str]) -> ValueError:
    """A ValueError naming the bad value, what is allowed and the closest match."""
    allowed = sorted(allowed)
    message = f"Unknown {kind} {value!r}. Allowed: {', '.join(allowed)}."
    close = difflib.get_close_matches(str(value), allowed, n=1, cutoff=0.6)
    if close:
        message += f" Did you mean {close[0]!r}?"
    return ValueError(message)
