"""Values from YAML, JSON, the command line or Python, converted to a declared type, or refused in one line.

The training config's fields and the methods' own options are both checked here, so that a value is read the same
way wherever it is given.
"""

from __future__ import annotations

import math
import types
import typing

# Strings YAML 1.1 reads as booleans, for booleans that arrive quoted (JSON, environment, "yes").
BOOLEAN_WORDS = {
    **dict.fromkeys(("true", "yes", "on", "y"), True),
    **dict.fromkeys(("false", "no", "off", "n"), False),
}
_KINDS = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}
_PLURAL_KINDS = {int: "integers", float: "numbers", bool: "booleans", str: "names"}


def _describe(annotation) -> str:
    """What a field of type ``annotation`` accepts, in words for error messages."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        return f"{_describe(inner)} or null"
    if origin is list:
        plural = _PLURAL_KINDS[typing.get_args(annotation)[0]]
        return f"a list of {plural} (or one string of comma-separated {plural})"
    return _KINDS[annotation]


def _convert_scalar(value, kind: type):
    """``value`` as ``kind`` (int, float, bool or str); raises ValueError (without a message) if it is not one."""
    # bool is a subclass of int: `epochs: true` must not train one epoch.
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in BOOLEAN_WORDS:
            return BOOLEAN_WORDS[value.strip().lower()]
    elif isinstance(value, bool):
        raise ValueError
    elif kind is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return int(value.strip())
    elif kind is float:
        # YAML reads 1e-2 (no dot in the mantissa) as a string.
        if isinstance(value, int | float | str):
            number = float(value)
            if math.isfinite(number):
                return number
    elif kind is str and isinstance(value, str):
        return value
    raise ValueError


def convert_value(key: str, value, annotation):
    """Convert a config value to its field's declared type.

    Args:
        key: the field's name, for the error message.
        value: the value as given (from YAML, JSON, the command line or Python).
        annotation: the field's resolved type hint, e.g. ``int | None`` or ``list[str]``.

    Returns:
        The value as the declared type; a string for a list field is split at commas.

    Raises:
        ValueError: naming the key, the value and what the field accepts.
    """
    origin = typing.get_origin(annotation)
    try:
        if origin in (typing.Union, types.UnionType):
            if value is None:
                return None
            (inner,) = [a for a in typing.get_args(annotation) if a is not type(None)]
            return convert_value(key, value, inner)
        if origin is list:
            items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
            if not isinstance(items, list | tuple):
                raise ValueError
            return [_convert_scalar(item, typing.get_args(annotation)[0]) for item in items]
        return _convert_scalar(value, annotation)
    except (ValueError, OverflowError):
        raise ValueError(f"{key} must be {_describe(annotation)}, got {value!r}.") from None
