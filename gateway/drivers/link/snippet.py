"""The ``[[sensor]]`` table ``gateway scan`` prints for a device it found.

Every value is written as TOML: strings as basic strings with their quotes,
backslashes and control characters escaped (a port name is pasted into the
config as is), numbers and booleans as themselves, lists of them in brackets.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["TomlValue", "sensor_snippet", "toml_string", "toml_value"]

TomlValue = str | bool | int | float | Sequence["TomlValue"]


_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for c in text:
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04X}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def toml_value(value: TomlValue) -> str:
    """``value`` as TOML; a list of lists is written one inner list a line."""
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    items = [toml_value(v) for v in value]
    if any(not isinstance(v, str) and isinstance(v, Sequence) for v in value):
        return "[\n" + "".join(f"    {item},\n" for item in items) + "]"
    return "[" + ", ".join(items) + "]"


def sensor_snippet(*fields: tuple[str, TomlValue] | tuple[str, TomlValue, str]) -> str:
    """A complete ``[[sensor]]`` table of ``(key, value)`` or ``(key, value, comment)``
    fields, in order; a comment goes at the end of the field's first line."""
    lines = ["[[sensor]]"]
    for key, value, *comment in fields:
        text = f"{key} = {toml_value(value)}"
        if comment:
            first, nl, rest = text.partition("\n")
            text = f"{first}  # {comment[0]}{nl}{rest}"
        lines.append(text)
    return "\n".join(lines) + "\n"
