"""SDI-12 v1.4 as pure functions: build commands, parse replies, check CRCs.

Nothing here does IO or reads a clock. Every parser takes one reply line as
bytes (its CR LF already removed) and the address it expects, and either
returns a value or raises an ``Sdi12Rejection`` whose ``reason`` is a short
stable label for ``Sink.reject``:

=================  ==========================================================
``malformed``      not the shape the command's reply must have
``wrong-address``  well formed, but from another address (bus contention, a
                   late reply to an earlier command)
``crc``            the 3-character CRC does not match the line
``count-mismatch`` more or fewer values than the measurement announced
``aborted``        an empty data reply: the sonde dropped the measurement
=================  ==========================================================

Grammar (sensor-protocols §4.3, spec §4.4): ``a!`` → ``a``; ``aI!`` →
``allccccccccmmmmmmvvv[x…x]`` (2-digit version, 8-char vendor, 6-char model,
3-char version, up to 13 chars of serial); ``aM!``/``aMC!``/``aMn!`` →
``atttn``; ``aC!``/``aCC!``/``aCn!`` → ``atttnn``; ``aDn!`` → ``a<values>``
or ``a<values><CRC>``. A value is a mandatory sign, 1 to 7 digits and at most
one decimal point (9 characters at most); ``<values>`` holds at most 35
characters after M and 75 after C.

CRC (spec §4.4.12): CRC-16, reflected polynomial 0xA001, initial value 0,
over the reply from its address up to (not including) the CR; sent as three
characters ``0x40|crc>>12``, ``0x40|(crc>>6)&0x3F``, ``0x40|crc&0x3F``.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from gateway.drivers.link.display import escape
from gateway.errors import ProtocolError

__all__ = [
    "ADDRESSES",
    "MAX_DATA_COMMANDS",
    "MAX_VALUES_CHARS_C",
    "MAX_VALUES_CHARS_M",
    "Aborted",
    "CountMismatch",
    "DataCollector",
    "Identity",
    "Malformed",
    "MeasureReply",
    "MeasureRequest",
    "ParameterInfo",
    "Sdi12BadCrc",
    "Sdi12Rejection",
    "WrongAddress",
    "acknowledge",
    "address_query",
    "append_crc",
    "crc16",
    "crc_chars",
    "identify",
    "identify_measurement",
    "identify_parameter",
    "is_address",
    "parse_acknowledge",
    "parse_address",
    "parse_data",
    "parse_identity",
    "parse_measure_reply",
    "parse_parameter_info",
    "parse_values",
    "send_data",
    "strip_echo",
]

ADDRESSES = string.digits + string.ascii_uppercase + string.ascii_lowercase
"""Every valid sensor address, standard ones (``0``-``9``) first."""

MAX_VALUES_CHARS_M = 35
"""Longest ``<values>`` in a D reply after an M (or V) measurement."""
MAX_VALUES_CHARS_C = 75
"""Longest ``<values>`` in a D reply after a concurrent (C) measurement."""
MAX_DATA_COMMANDS = 10
"""``aD0!`` … ``aD9!``: where a measurement's values must have arrived by."""

_MAX_VALUE_DIGITS = 7
_MAX_VALUE_CHARS = 9
_MAX_SERIAL_CHARS = 13
_IDENTITY_FIXED = 1 + 2 + 8 + 6 + 3  # address, version, vendor, model, sensor version
_VALUE = re.compile(rb"[+-][0-9.]*")
_LABEL = "sdi12"  # sensor name in errors when the caller gives none


# -- rejections ----------------------------------------------------------------------------


class Sdi12Rejection(ProtocolError):
    """A reply the protocol does not allow; ``reason`` is the ``Sink.reject`` label."""

    reason = "malformed"

    def __init__(self, problem: str, sensor: str | None = None) -> None:
        super().__init__(sensor or _LABEL, problem)


class Malformed(Sdi12Rejection):
    """Not the shape this command's reply must have."""

    reason = "malformed"


class WrongAddress(Sdi12Rejection):
    """A well-formed reply from another address than the one asked."""

    reason = "wrong-address"


class Sdi12BadCrc(Sdi12Rejection):
    """The CRC characters do not match the reply."""

    reason = "crc"


class CountMismatch(Sdi12Rejection):
    """More or fewer values than the measurement announced (or the config expects)."""

    reason = "count-mismatch"


class Aborted(Sdi12Rejection):
    """A data reply with no values before all announced values arrived."""

    reason = "aborted"


# -- CRC -----------------------------------------------------------------------------------


def crc16(data: bytes) -> int:
    """The SDI-12 CRC-16 of ``data`` (address through the last value)."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def crc_chars(crc: int) -> bytes:
    """The three characters that carry ``crc`` on the wire."""
    return bytes((0x40 | (crc >> 12), 0x40 | ((crc >> 6) & 0x3F), 0x40 | (crc & 0x3F)))


def append_crc(body: bytes) -> bytes:
    """``body`` followed by its CRC characters (what a sonde sends before CR LF)."""
    return body + crc_chars(crc16(body))


# -- commands ------------------------------------------------------------------------------


def is_address(text: str) -> bool:
    """True for ``0``-``9``, ``A``-``Z``, ``a``-``z``."""
    return len(text) == 1 and text in ADDRESSES


def _checked(address: str) -> str:
    if not is_address(address):
        raise ValueError(f"{address!r} is not an SDI-12 address (0-9, A-Z, a-z)")
    return address


def acknowledge(address: str) -> str:
    """``a!``: is a sonde at ``address`` awake and listening?"""
    return f"{_checked(address)}!"


def address_query() -> str:
    """``?!``: every sonde answers with its address (contention if more than one)."""
    return "?!"


def identify(address: str) -> str:
    """``aI!``: version, vendor, model, firmware and serial."""
    return f"{_checked(address)}I!"


@dataclass(frozen=True, slots=True)
class MeasureRequest:
    """Which measurement command to send: ``M``/``C``, with CRC or not, index 0-9.

    ``MeasureRequest.parse("MC1")`` is ``aMC1!``: the second M measurement set
    with CRCs on its data replies.
    """

    concurrent: bool = False
    crc: bool = False
    index: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.index <= 9:
            raise ValueError(f"measurement index {self.index} is not 0-9")

    @classmethod
    def parse(cls, text: str) -> MeasureRequest:
        """``M``, ``MC``, ``C``, ``CC``, each optionally followed by a digit 1-9."""
        match = re.fullmatch(r"([MC])(C?)([1-9]?)", text)
        if match is None:
            raise ValueError(f"{text!r} is not M, MC, C or CC with an optional index 1-9")
        kind, crc, index = match.groups()
        return cls(concurrent=kind == "C", crc=bool(crc), index=int(index or 0))

    @property
    def code(self) -> str:
        """The command letters, e.g. ``MC1``."""
        return f"{'C' if self.concurrent else 'M'}{'C' if self.crc else ''}{self.index or ''}"

    @property
    def max_values_chars(self) -> int:
        return MAX_VALUES_CHARS_C if self.concurrent else MAX_VALUES_CHARS_M

    def command(self, address: str) -> str:
        """``aM!``, ``aMC!``, ``aC3!``, …"""
        return f"{_checked(address)}{self.code}!"


def identify_measurement(address: str, request: MeasureRequest) -> str:
    """``aIM!`` (v1.4): the measurement reply shape, without measuring."""
    return f"{_checked(address)}I{request.code}!"


def identify_parameter(address: str, request: MeasureRequest, number: int) -> str:
    """``aIM_001!`` (v1.4): what the ``number``-th value (1-based) of a measurement is."""
    if not 1 <= number <= 99:
        raise ValueError(f"parameter number {number} is not 1-99")
    return f"{_checked(address)}I{request.code}_{number:03d}!"


def send_data(address: str, index: int) -> str:
    """``aD0!`` … ``aD9!``."""
    if not 0 <= index < MAX_DATA_COMMANDS:
        raise ValueError(f"data command index {index} is not 0-9")
    return f"{_checked(address)}D{index}!"


# -- replies -------------------------------------------------------------------------------


def _show(line: bytes) -> str:
    return f"'{escape(line)}'"


def strip_echo(line: bytes, command: bytes) -> bytes:
    """Drop an echo of ``command`` that some adapters put before the reply.

    Spec tables write exchanges as ``0M!00053``; an adapter that echoes prints
    the same. A reply never contains ``!``, so only an exact echo is removed.
    """
    return line[len(command) :] if command and line.startswith(command) else line


def _text(line: bytes, what: str, sensor: str | None) -> str:
    """The line as ASCII text; printable characters only."""
    for offset, byte in enumerate(line):
        if not 0x20 <= byte <= 0x7E:
            raise Malformed(
                f"{what} {_show(line)} has byte 0x{byte:02x} at offset {offset}", sensor
            )
    return line.decode("ascii")


def _address(line: bytes, address: str, what: str, sensor: str | None) -> None:
    if not line:
        raise Malformed(f"{what} is empty", sensor)
    first = chr(line[0])
    if first == address:
        return
    if is_address(first):
        raise WrongAddress(
            f"{what} {_show(line)} comes from address {first!r}, not {address!r}", sensor
        )
    raise Malformed(f"{what} {_show(line)} does not start with an address", sensor)


def parse_acknowledge(line: bytes, address: str, *, sensor: str | None = None) -> None:
    """``a`` (the reply to ``a!``, and a service request)."""
    _address(line, address, "acknowledgement", sensor)
    if len(line) != 1:
        raise Malformed(f"acknowledgement {_show(line)} is not just the address", sensor)


def parse_address(line: bytes, *, sensor: str | None = None) -> str:
    """The address in a reply to ``?!`` (one character)."""
    if len(line) != 1 or not is_address(chr(line[0])):
        raise Malformed(f"address reply {_show(line)} is not one address character", sensor)
    return chr(line[0])


@dataclass(frozen=True, slots=True)
class Identity:
    """What ``aI!`` said; ``sdi12_version`` is e.g. ``"1.4"``."""

    address: str
    sdi12_version: str
    vendor: str
    model: str
    version: str
    serial: str
    raw: str

    @property
    def version_number(self) -> int:
        """``14`` for SDI-12 1.4."""
        return int(self.sdi12_version.replace(".", ""))


def parse_identity(line: bytes, address: str, *, sensor: str | None = None) -> Identity:
    """``allccccccccmmmmmmvvv[xxx…]``; vendor, model and serial are stripped of padding."""
    _address(line, address, "identity", sensor)
    text = _text(line, "identity", sensor)
    if not _IDENTITY_FIXED <= len(text) <= _IDENTITY_FIXED + _MAX_SERIAL_CHARS:
        raise Malformed(
            f"identity {text!r} has {len(text)} characters, expected "
            f"{_IDENTITY_FIXED}-{_IDENTITY_FIXED + _MAX_SERIAL_CHARS}",
            sensor,
        )
    version = text[1:3]
    if not version.isdigit():
        raise Malformed(f"identity {text!r} has no 2-digit SDI-12 version", sensor)
    return Identity(
        address=address,
        sdi12_version=f"{version[0]}.{version[1]}",
        vendor=text[3:11].strip(),
        model=text[11:17].strip(),
        version=text[17:20].strip(),
        serial=text[20:].strip(),
        raw=text,
    )


@dataclass(frozen=True, slots=True)
class MeasureReply:
    """``atttn`` / ``atttnn``: values ready within ``ready_s`` seconds, ``count`` of them."""

    address: str
    ready_s: int
    count: int


def parse_measure_reply(
    line: bytes, address: str, request: MeasureRequest, *, sensor: str | None = None
) -> MeasureReply:
    """``atttn`` after M (n is one digit), ``atttnn`` after C (two digits)."""
    _address(line, address, "measurement reply", sensor)
    text = _text(line, "measurement reply", sensor)
    digits = 1 if not request.concurrent else 2
    if len(text) != 4 + digits or not text[1:].isdigit() or not text[1:].isascii():
        shape = "atttnn" if request.concurrent else "atttn"
        raise Malformed(f"reply {text!r} to {request.code} is not {shape}", sensor)
    return MeasureReply(address, int(text[1:4]), int(text[4:]))


def parse_values(text: str, *, sensor: str | None = None) -> tuple[float, ...]:
    """``+1.23-4.5+7`` → ``(1.23, -4.5, 7.0)``; ``""`` → ``()``.

    Each value: a sign, 1-7 digits, at most one decimal point, 9 chars at most.
    """
    raw = text.encode("ascii", errors="replace")
    values: list[float] = []
    position = 0
    while position < len(raw):
        match = _VALUE.match(raw, position)
        if match is None:
            raise Malformed(
                f"values {text!r}: expected a sign at offset {position}, got "
                f"{_show(raw[position : position + 1])}",
                sensor,
            )
        token = match.group().decode("ascii")
        digits = sum(ch.isdigit() for ch in token)
        if not 1 <= digits <= _MAX_VALUE_DIGITS or token.count(".") > 1:
            raise Malformed(
                f"value {token!r} in {text!r} needs 1-{_MAX_VALUE_DIGITS} digits and at most "
                "one decimal point",
                sensor,
            )
        if len(token) > _MAX_VALUE_CHARS:
            raise Malformed(f"value {token!r} in {text!r} is longer than 9 characters", sensor)
        values.append(float(token))
        position = match.end()
    return tuple(values)


def parse_data(
    line: bytes,
    address: str,
    *,
    crc: bool,
    max_values_chars: int = MAX_VALUES_CHARS_C,
    sensor: str | None = None,
) -> tuple[float, ...]:
    """The values of a D reply (``()`` when it holds none); the CRC is checked first."""
    _address(line, address, "data reply", sensor)
    if crc:
        if len(line) < 4:
            raise Malformed(f"data reply {_show(line)} is too short to carry a CRC", sensor)
        body, received = line[:-3], line[-3:]
        expected = crc_chars(crc16(body))
        if received != expected:
            raise Sdi12BadCrc(
                f"data reply {_show(line)} ends in {_show(received)}; its CRC is {_show(expected)}",
                sensor,
            )
    else:
        body = line
    _text(body, "data reply", sensor)
    values_text = body[1:].decode("ascii")
    if len(values_text) > max_values_chars:
        raise Malformed(
            f"data reply {_show(line)} has {len(values_text)} characters of values, "
            f"more than the {max_values_chars} allowed",
            sensor,
        )
    return parse_values(values_text, sensor=sensor)


@dataclass(frozen=True, slots=True)
class ParameterInfo:
    """An ``aIM_nnn!`` reply: ``a,<name>,<units>[,more…];``."""

    name: str
    units: str
    extra: tuple[str, ...]


def parse_parameter_info(
    line: bytes, address: str, *, crc: bool = False, sensor: str | None = None
) -> ParameterInfo | None:
    """``None`` when the sonde says the parameter number is past its last value."""
    _address(line, address, "parameter info", sensor)
    if crc:
        if len(line) < 4:
            raise Malformed(f"parameter info {_show(line)} is too short for a CRC", sensor)
        if line[-3:] != crc_chars(crc16(line[:-3])):
            raise Sdi12BadCrc(f"parameter info {_show(line)} fails its CRC", sensor)
        line = line[:-3]
    text = _text(line, "parameter info", sensor)
    if len(text) == 1:
        return None
    if not (text.startswith(f"{address},") and text.endswith(";")):
        raise Malformed(f"parameter info {text!r} is not a,<name>,<units>;", sensor)
    fields = text[2:-1].split(",")
    if len(fields) < 2 or not fields[0].strip():
        raise Malformed(f"parameter info {text!r} lacks a name or units field", sensor)
    return ParameterInfo(fields[0].strip(), fields[1].strip(), tuple(f.strip() for f in fields[2:]))


class DataCollector:
    """Gathers the values of ``aD0!``, ``aD1!``, … until ``count`` have arrived.

    ``add`` takes each reply's values and returns True once the measurement is
    complete; it raises ``Aborted`` for an empty reply that comes early and
    ``CountMismatch`` when a reply overshoots the count or ``aD9!`` still
    leaves values missing.
    """

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError("a measurement needs at least one value")
        self.count = count
        self.values: list[float] = []
        self.replies = 0

    @property
    def next_command(self) -> int:
        """Index of the next D command to send."""
        return self.replies

    def add(self, values: tuple[float, ...], *, sensor: str | None = None) -> bool:
        self.replies += 1
        if not values:
            raise Aborted(
                f"empty reply to D{self.replies - 1} after {len(self.values)} of "
                f"{self.count} values: the measurement was aborted",
                sensor,
            )
        self.values.extend(values)
        if len(self.values) > self.count:
            raise CountMismatch(
                f"D0-D{self.replies - 1} returned {len(self.values)} values, the measurement "
                f"announced {self.count}",
                sensor,
            )
        if len(self.values) == self.count:
            return True
        if self.replies >= MAX_DATA_COMMANDS:
            raise CountMismatch(
                f"D0-D9 returned {len(self.values)} of {self.count} announced values", sensor
            )
        return False
