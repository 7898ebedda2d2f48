"""NMEA 0183 sentences, pure: bytes in, a ``Sentence``, a ``Value`` or a ``Bad`` out.

A sentence is one line of printable ASCII (NMEA 0183 §5.3)::

    $YXMTW,12.3,C*12
    $SDDBT,40.7,f,12.4,M,6.8,F*0C

``$``, the address field (a two-character talker id and a three-character
sentence formatter), comma-separated data fields, ``*`` and the checksum: the
XOR of every byte between ``$`` and ``*``, as two hexadecimal digits. At most
82 characters with ``$`` and the CR LF that ends it (``MAX_SENTENCE_BYTES`` is
that limit less the terminator). An empty field is a null field: the talker has
no value to give.

The driver requires the checksum (a sentence without one is refused, not
trusted) and reads two formatters, by the fields NMEA 0183 gives them:

- ``MTW``, mean temperature of water: ``x.x,C`` (degrees Celsius) -> ``temperature`` Cel.
- ``DBT``, depth below transducer: ``x.x,f,x.x,M,x.x,F`` (feet, metres, fathoms) ->
  ``depth`` m, from the metres field.

Every fault is a ``Bad`` with a stable ``reason`` (what ``Sink.reject`` counts):
``garbage`` (not a sentence: no ``$``, not printable ASCII, no address),
``no-checksum``, ``bad-checksum``, ``bad-field`` (a field that is not what the
formatter puts there) and ``no-value`` (the value's field is null). Nothing
here raises for what a line contains.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.pipeline import Value

__all__ = [
    "MAX_SENTENCE_BYTES",
    "QUANTITIES",
    "Bad",
    "Sentence",
    "checksum",
    "parse_sentence",
    "value_of",
]

MAX_SENTENCE_BYTES = 80
"""The longest sentence, ``$`` to checksum: 82 characters less the CR LF."""

QUANTITIES: dict[str, tuple[str, str]] = {
    "MTW": ("temperature", "Cel"),
    "DBT": ("depth", "m"),
}
"""Formatter -> (quantity, unit) of the value the driver takes from it."""

_FIELDS: dict[str, tuple[int, int, str]] = {"MTW": (0, 1, "C"), "DBT": (2, 3, "M")}
"""Formatter -> (index of the value's field, index of its unit's field, that unit)."""
_ADDRESS = re.compile(r"[A-Z0-9]{5}")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")  # NMEA writes plain decimals: no exponent, no NaN


@dataclass(frozen=True, slots=True)
class Sentence:
    """A sentence whose checksum held."""

    talker: str
    formatter: str
    fields: tuple[str, ...]
    text: str
    """The whole sentence as received, ``$`` to checksum."""


@dataclass(frozen=True, slots=True)
class Bad:
    """A line or sentence refused: ``reason`` (a stable label) and what was wrong."""

    reason: str
    detail: str


def checksum(body: bytes) -> int:
    """The XOR of ``body``'s bytes: the bytes between ``$`` and ``*``."""
    total = 0
    for byte in body:
        total ^= byte
    return total


def parse_sentence(line: bytes) -> Sentence | Bad:
    """One line, without its terminator, as a checked ``Sentence``."""
    if not line.isascii() or not all(0x20 <= b < 0x7F for b in line):
        return Bad("garbage", f"not printable ASCII: {line[:40]!r}")
    text = line.decode("ascii")
    if not text.startswith("$"):
        return Bad("garbage", f"not a sentence (no '$'): {text[:40]!r}")
    body, star, given = text[1:].rpartition("*")
    if not star:
        return Bad("no-checksum", f"{text[:40]!r} has no '*hh' checksum")
    if not re.fullmatch(r"[0-9A-Fa-f]{2}", given):
        return Bad("garbage", f"{text[:40]!r}: checksum {given!r} is not two hex digits")
    computed = checksum(body.encode("ascii"))
    if int(given, 16) != computed:
        return Bad("bad-checksum", f"{text!r}: *{given} given, *{computed:02X} computed")
    address, *fields = body.split(",")
    if not _ADDRESS.fullmatch(address):
        return Bad("garbage", f"{text!r}: {address!r} is not a talker and formatter")
    return Sentence(address[:2], address[2:], tuple(fields), text)


def value_of(sentence: Sentence) -> Value | Bad:
    """The value a ``MTW`` or ``DBT`` sentence carries (``QUANTITIES``)."""
    quantity, unit = QUANTITIES[sentence.formatter]
    at, unit_at, marker = _FIELDS[sentence.formatter]
    fields = sentence.fields
    if len(fields) <= unit_at:
        return Bad("bad-field", f"{sentence.text!r}: too few fields for {sentence.formatter}")
    raw, marked = fields[at], fields[unit_at]
    if raw == "":
        return Bad("no-value", f"{sentence.text!r}: the {quantity} field is null")
    if marked != marker:
        return Bad("bad-field", f"{sentence.text!r}: unit {marked!r}, not {marker!r}")
    if not _NUMBER.fullmatch(raw):
        return Bad("bad-field", f"{sentence.text!r}: {raw!r} is not a number")
    return Value(quantity, float(raw), unit)
