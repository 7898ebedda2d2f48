"""The EZO wire protocol, pure: lines in, values or ``ProtocolError`` out.

``parse_line`` classifies one line as a ``StatusLine``
(``*OK``, ``*ER``, ``*RS`` ...), a ``QueryReply`` (``?I,pH,2.16``,
``?,O,EC,TDS``, ``?*OK,1``) or a ``DataLine`` (``7.156``, ``412.0,1.025``,
``no output``), case-insensitively, and raises ProtocolError for anything
else. ``parse_reading`` turns a data line into named values for a circuit
and its enabled outputs; ``parse_identity``, ``parse_outputs`` and
``parse_scale`` read the ``i``, ``O,?`` and RTD ``S,?`` replies;
``interpret`` does all of it for one received line without raising.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.drivers.link.serial import MAX_LINE_BYTES
from gateway.errors import ProtocolError
from gateway.pipeline import Value

__all__ = [
    "MEASURING_RANGES",
    "STATUS_CODES",
    "DataLine",
    "EzoLine",
    "Interpretation",
    "QueryReply",
    "ReadingLine",
    "Rejected",
    "StatusLine",
    "interpret",
    "parse_identity",
    "parse_line",
    "parse_outputs",
    "parse_reading",
    "parse_scale",
    "to_celsius",
]


STATUS_CODES = frozenset({"*OK", "*ER", "*OV", "*UV", "*RS", "*RE", "*SL", "*WA", "*DONE"})

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_KEY = re.compile(r"\*?[A-Za-z][A-Za-z0-9]*")
_FIRMWARE = re.compile(r"\d+(?:\.\d+)*")
_NO_OUTPUT = "no output"
_LABEL = "ezo"  # sensor name in errors raised by the pure parser, which knows no sensor id

# Selectable outputs in the order a reading lists them, with what each becomes.
_OUTPUTS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "ec": (
        ("EC", "ec", "uS/cm"),
        ("TDS", "tds", "ppm"),
        ("S", "salinity", "PSU"),
        ("SG", "specific_gravity", "1"),
    ),
    "do": (("mg", "do", "mg/l"), ("%", "do_sat", "/100")),
}
_SINGLE: dict[str, tuple[str, str]] = {
    "ph": ("ph", "pH"),
    "orp": ("orp", "mV"),
    "rtd": ("temperature", "Cel"),
}


@dataclass(frozen=True, slots=True)
class StatusLine:
    """A response code; ``code`` is upper-case, e.g. ``*OK``."""

    code: str


@dataclass(frozen=True, slots=True)
class QueryReply:
    """A ``?`` reply. ``key`` is the upper-case identifier (``I``, ``STATUS``,
    ``O`` for both ``?,O,...`` and ``?O,...``, ``*OK``); ``fields`` follow it."""

    key: str
    fields: tuple[str, ...]
    text: str


@dataclass(frozen=True, slots=True)
class DataLine:
    """A reading: its numbers (none for ``no output``) and its exact text."""

    values: tuple[float, ...]
    text: str


EzoLine = StatusLine | QueryReply | DataLine


def _error(problem: str, sensor: str | None) -> ProtocolError:
    return ProtocolError(sensor or _LABEL, problem)


def _number(token: str, what: str, sensor: str | None) -> float:
    if not _NUMBER.fullmatch(token):
        raise _error(f"{what} {token!r} is not a number", sensor)
    value = float(token)
    if not math.isfinite(value):
        raise _error(f"{what} {token!r} is not a finite number", sensor)
    return value


def parse_line(line: bytes, *, sensor: str | None = None) -> EzoLine:
    """Classify one line; a trailing CR, LF or CRLF is allowed and removed.

    Raises:
        ProtocolError: empty, overlong, non-ASCII, control bytes, an unknown
            response code, or text that is no reply shape of the protocol.
    """
    if line.endswith(b"\r\n"):
        line = line[:-2]
    elif line.endswith((b"\r", b"\n")):
        line = line[:-1]
    if not line:
        raise _error("empty line", sensor)
    if len(line) > MAX_LINE_BYTES:
        raise _error(f"line of {len(line)} bytes is longer than {MAX_LINE_BYTES}", sensor)
    for offset, byte in enumerate(line):
        if byte >= 0x80:
            raise _error(f"non-ASCII byte 0x{byte:02x} at offset {offset}", sensor)
        if byte < 0x20 or byte == 0x7F:
            raise _error(f"control byte 0x{byte:02x} at offset {offset}", sensor)
    text = line.decode("ascii")
    if text.startswith("*"):
        code = text.upper()
        if code not in STATUS_CODES:
            raise _error(f"unknown response code {text!r}", sensor)
        return StatusLine(code)
    if text.startswith("?"):
        tokens = text[1:].split(",")
        if tokens[0] == "" and len(tokens) > 1:
            tokens = tokens[1:]  # the odd "?,O,EC" / "?,P,101.3" form
        if not _KEY.fullmatch(tokens[0]):
            raise _error(f"query reply {text!r} has no valid identifier", sensor)
        return QueryReply(tokens[0].upper(), tuple(tokens[1:]), text)
    if text.lower() == _NO_OUTPUT:
        return DataLine((), text)
    values = tuple(
        _number(token, f"field {i + 1} of {text!r}:", sensor)
        for i, token in enumerate(text.split(","))
    )
    return DataLine(values, text)


def _enabled_fields(
    circuit: str, fields_enabled: Sequence[str], sensor: str | None
) -> tuple[tuple[str, str], ...]:
    """(quantity, unit) per field a reading carries, in reading order."""
    if circuit in _SINGLE:
        return (_SINGLE[circuit],)
    if circuit not in _OUTPUTS:
        raise ValueError(f"unknown EZO circuit {circuit!r}")
    wanted = {name.upper() for name in fields_enabled}
    known = {name.upper() for name, _, _ in _OUTPUTS[circuit]}
    if wanted - known:
        raise _error(f"unknown {circuit} output(s) {sorted(wanted - known)}", sensor)
    return tuple((q, u) for name, q, u in _OUTPUTS[circuit] if name.upper() in wanted)


def parse_reading(
    circuit: str, fields_enabled: Sequence[str], text: str, *, sensor: str | None = None
) -> tuple[Value, ...]:
    """Named values of one reading line (without terminator).

    ``fields_enabled`` matters for DO (``mg``, ``%``) and EC (``EC``, ``TDS``,
    ``S``, ``SG``), case-insensitively and in any order: the reading lists
    them in the circuit's fixed order. ``no output`` with nothing enabled
    gives ``()``.

    Raises:
        ProtocolError: wrong number of fields, or a field that is not a
            finite number.
    """
    fields = _enabled_fields(circuit, fields_enabled, sensor)
    if text.lower() == _NO_OUTPUT:
        if fields:
            raise _error(f"{circuit} reading is {text!r} but {len(fields)} field(s) are on", sensor)
        return ()
    tokens = text.split(",")
    if len(tokens) != len(fields):
        names = ",".join(q for q, _ in fields) or "none"
        raise _error(
            f"{circuit} reading {text!r} has {len(tokens)} field(s), expected "
            f"{len(fields)} ({names})",
            sensor,
        )
    return tuple(
        Value(quantity, _number(token, f"{quantity} value", sensor), unit)
        for (quantity, unit), token in zip(fields, tokens, strict=True)
    )


def parse_identity(text: str, *, sensor: str | None = None) -> tuple[str, str]:
    """``?I,pH,2.16`` → ``("PH", "2.16")``; old ``?I,D.O.,1.1`` → ``("DO", "1.1")``.

    The type is upper-cased with dots removed, as the ezo-driver library does.
    """
    tokens = text.strip().split(",")
    if len(tokens) != 3 or tokens[0].upper() != "?I":
        raise _error(f"{text!r} is not an identity reply (?I,<type>,<firmware>)", sensor)
    kind = tokens[1].replace(".", "").upper()
    if not kind.isalnum() or not kind.isascii():
        raise _error(f"identity reply {text!r} has no device type", sensor)
    if not _FIRMWARE.fullmatch(tokens[2]):
        raise _error(f"identity reply {text!r} has no firmware version", sensor)
    return kind, tokens[2]


def parse_outputs(circuit: str, text: str, *, sensor: str | None = None) -> tuple[str, ...]:
    """Enabled outputs from an ``O,?`` reply, canonical names in reading order.

    ``?,O,%,mg`` and ``?O,mg,%`` both give ``("mg", "%")`` for DO; for EC the
    names are ``EC``, ``TDS``, ``S``, ``SG``.
    """
    if circuit not in _OUTPUTS:
        raise ValueError(f"{circuit!r} has no selectable outputs")
    line = parse_line(text.encode("ascii", errors="replace"), sensor=sensor)
    if not isinstance(line, QueryReply) or line.key != "O":
        raise _error(f"{text!r} is not an output query reply (?,O,...)", sensor)
    by_upper = {name.upper(): name for name, _, _ in _OUTPUTS[circuit]}
    given = [f.strip().upper() for f in line.fields if f.strip()]
    if [f.lower() for f in given] == [_NO_OUTPUT]:
        given = []
    unknown = [f for f in given if f not in by_upper]
    if unknown:
        raise _error(f"output reply {text!r} names unknown {circuit} outputs {unknown}", sensor)
    return tuple(name for name, _, _ in _OUTPUTS[circuit] if name.upper() in given)


# -- one line, interpreted without raising ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Rejected:
    """A line that is not usable, with the ``Sink.reject`` reason and detail."""

    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class ReadingLine:
    """A reading line with its named values (empty for ``no output``)."""

    values: tuple[Value, ...]
    text: str


Interpretation = ReadingLine | StatusLine | QueryReply | Rejected


def interpret(
    line: bytes,
    circuit: str,
    outputs: Sequence[str],
    *,
    sensor: str,
    units: Mapping[str, str] | None = None,
) -> Interpretation:
    """What one received line is, for a circuit with ``outputs`` enabled; never raises.

    A line that is no protocol shape gives ``Rejected("garbage", ...)``; one
    that is a number list of the wrong shape for the circuit gives
    ``Rejected("bad-reading", ...)``; a value the circuit cannot report
    (outside its datasheet range, ``MEASURING_RANGES``) gives
    ``Rejected("out-of-range", ...)``: usually a line that lost its CR and ran
    into the next one. ``units`` overrides a quantity's unit (an RTD set to
    kelvin or Fahrenheit).
    """
    try:
        parsed = parse_line(line, sensor=sensor)
    except ProtocolError as exc:
        return Rejected("garbage", exc.problem)
    if not isinstance(parsed, DataLine):
        return parsed
    try:
        values = parse_reading(circuit, outputs, parsed.text, sensor=sensor)
    except ProtocolError as exc:
        return Rejected("bad-reading", exc.problem)
    if units:
        values = tuple(Value(v.quantity, v.value, units.get(v.quantity, v.unit)) for v in values)
    for v in values:
        low, high = MEASURING_RANGES[v.quantity]
        native = to_celsius(v.value, v.unit) if v.quantity == "temperature" else v.value
        if not low <= native <= high:
            return Rejected(
                "out-of-range",
                f"{v.quantity} {v.value:g} {v.unit} in {parsed.text!r} is outside what an "
                f"EZO-{circuit.upper()} reports ({low:g} to {high:g})",
            )
    return ReadingLine(values, parsed.text)


MEASURING_RANGES: dict[str, tuple[float, float]] = {
    "ph": (-1.6, 15.6),  # extended range
    "orp": (-2000.0, 2000.0),  # extended range, mV
    "temperature": (-126.0, 1254.0),  # °C
    "do": (0.0, 100.0),  # mg/l; the datasheet says "100+", water holds far less
    "do_sat": (0.0, 500.0),  # %; the datasheet says "400+"
    "ec": (0.0, 1_000_000.0),  # µS/cm; the datasheet says "500,000+"
    "tds": (0.0, 1_000_000.0),
    "salinity": (0.0, 42.0),  # PSU
    "specific_gravity": (1.0, 1.3),
}
"""What each quantity can be, from the circuit datasheets (sensor-protocols §1.5)."""


_RTD_SCALES = {"C": "Cel", "K": "K", "F": "[degF]"}


def parse_scale(text: str, *, sensor: str | None = None) -> str:
    """An RTD's ``S,?`` reply (``?S,c``, ``?S,K``) → the UCUM unit of its readings."""
    line = parse_line(text.encode("ascii", errors="replace"), sensor=sensor)
    if not isinstance(line, QueryReply) or line.key != "S" or len(line.fields) != 1:
        raise _error(f"{text!r} is not a temperature scale reply (?S,<c|k|f>)", sensor)
    unit = _RTD_SCALES.get(line.fields[0].strip().upper())
    if unit is None:
        raise _error(f"{text!r} names an unknown temperature scale", sensor)
    return unit


def to_celsius(value: float, unit: str) -> float:
    """An RTD reading in ``unit`` (``Cel``, ``K``, ``[degF]``) in degrees Celsius."""
    if unit == "K":
        return value - 273.15
    if unit == "[degF]":
        return (value - 32.0) * 5.0 / 9.0
    return value
