"""MQTT payloads, pure: the riverseal JSON contract and SenML packs, to timed samples.

JSON contract (with simulators/mqtt_node.py), one UTF-8 JSON object::

    {"seq": 17, "time": "2026-11-21T05:09:56.123Z",
     "values": [{"q": "temperature", "v": 14.213, "u": "Cel"}, ...]}

``parse_payload`` is strict: exactly these three keys; ``seq`` an integer in
[0, 2**63); ``time`` RFC 3339 (normalised to UTC,
``YYYY-MM-DDTHH:MM:SS.ffffffZ``); ``values`` a non-empty list of objects with
exactly ``q`` (quantity, unique within the payload), ``v`` (a finite JSON
number, not a boolean) and ``u`` (unit).

SenML (RFC 8428): see ``gateway.drivers.mqtt.senml``. A pack may carry
several record times; each distinct time becomes one sample, and the samples
come in ascending time order (so QC sees them in the order they were taken).

``decode`` is the one entry point the driver uses: it checks the size, UTF-8
and JSON syntax (no NaN/Infinity, no repeated keys) for both formats, then
applies the format's rules. Every failure is a ``PayloadError`` whose
``reason`` (``too-large``, ``not-utf8``, ``not-json``, ``bad-payload``,
``bad-senml``) labels it for ``Sink.reject`` and whose message names the
field. Nothing else escapes: the property tests feed arbitrary bytes and
arbitrary JSON.

Dedup keys: JSON ``src_seq:<seq>@<time>`` (the node's time is in the key, so
a node whose counter restarts is not taken for a duplicate); SenML
``senml:<time>:<digest of the values>`` (a re-sent pack with absolute times
is a duplicate; packs with relative times are stamped on arrival and cannot
be recognised when redelivered).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal

from gateway.drivers.mqtt.senml import SenmlError, json_number, parse_senml
from gateway.errors import ProtocolError
from gateway.pipeline import Value

__all__ = [
    "MAX_RAW_CHARS",
    "Decoded",
    "ParsedPayload",
    "PayloadError",
    "PayloadFormat",
    "Sample",
    "decode",
    "parse_payload",
]

PayloadFormat = Literal["json", "senml"]

MAX_RAW_CHARS = 1024
"""Payloads up to this many characters are kept verbatim in ``Reading.raw``."""

_MAX_SEQ = 2**63  # the log stores seq as a signed 64-bit integer
_MAX_NAME = 64
_KEYS = ("seq", "time", "values")
_VALUE_KEYS = ("q", "v", "u")
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,  # \d would take any Unicode digit, which no verifier reads back as a time
)


class PayloadError(ProtocolError):
    """A message that breaks the payload contract; ``reason`` labels it for ``Sink.reject``."""

    def __init__(self, sensor: str, reason: str, problem: str) -> None:
        super().__init__(sensor, problem)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ParsedPayload:
    """A message that met the JSON contract."""

    seq: int
    time: str
    """RFC 3339 UTC with microseconds, e.g. ``2026-11-21T05:09:56.123000Z``."""
    values: tuple[Value, ...]
    text: str
    """The payload as received, decoded."""


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _parse_time(text: str, bad: Callable[[str], PayloadError]) -> str:
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise bad(f"time {text!r} is not an RFC 3339 date-time")
    year, month, day, hour, minute, second = (int(g) for g in match.group(1, 2, 3, 4, 5, 6))
    fraction = (match.group(7) or "").ljust(6, "0")[:6]
    if match.group(8):
        try:  # already UTC: validate, then print it without a timezone round trip
            datetime(year, month, day, hour, minute, second)
        except ValueError as exc:
            raise bad(f"time {text!r} is not a valid date-time ({exc})") from None
        return f"{text[:10]}T{text[11:19]}.{fraction}Z"
    sign = 1 if match.group(9) == "+" else -1
    hours, minutes = int(match.group(10)), int(match.group(11))
    if hours > 23 or minutes > 59:
        raise bad(f"time {text!r} has an invalid UTC offset")
    tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        moment = datetime(year, month, day, hour, minute, second, int(fraction), tzinfo=tz)
        utc = moment.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise bad(f"time {text!r} is not a valid date-time ({exc})") from None
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _exact_keys(
    obj: dict[str, Any], keys: tuple[str, ...], where: str, bad: Callable[[str], PayloadError]
) -> None:
    missing = [k for k in keys if k not in obj]
    if missing:
        raise bad(f"{where} is missing {missing[0]!r}")
    extra = sorted(set(obj) - set(keys))
    if extra:
        raise bad(f"{where} has unknown key {extra[0]!r}")


def _parse_value(index: int, item: object, bad: Callable[[str], PayloadError]) -> Value:
    where = f"values[{index}]"
    if not isinstance(item, dict):
        raise bad(f"{where} must be an object, got {type(item).__name__}")
    _exact_keys(item, _VALUE_KEYS, where, bad)
    names: dict[str, str] = {}
    for key in ("q", "u"):
        name = item[key]
        if not isinstance(name, str):
            raise bad(f"{where}.{key} must be a string, got {type(name).__name__}")
        if not name or len(name) > _MAX_NAME or not name.isprintable():
            raise bad(f"{where}.{key} {name!r} must be 1 to {_MAX_NAME} printable characters")
        names[key] = name
    try:
        value = json_number(item["v"])
    except (TypeError, ValueError) as exc:
        raise bad(f"{where}.v {exc}") from None
    return Value(names["q"], value, names["u"])


def parse_payload(
    topic: str, payload: bytes, max_bytes: int, *, sensor: str | None = None
) -> ParsedPayload:
    """Check one message against the payload contract.

    ``sensor`` names the sensor in errors (default: the topic).

    Raises:
        PayloadError: with ``reason`` one of ``too-large``, ``not-utf8``,
            ``not-json``, ``bad-payload``; the message names the field.
    """
    who = sensor or topic

    def bad(problem: str, reason: str = "bad-payload") -> PayloadError:
        return PayloadError(who, reason, problem)

    text, doc = _read_json(who, payload, max_bytes)
    if not isinstance(doc, dict):
        raise bad(f"payload must be a JSON object, got {type(doc).__name__}")
    _exact_keys(doc, _KEYS, "payload", bad)
    seq = doc["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise bad(f"seq must be an integer, got {type(seq).__name__}")
    if not 0 <= seq < _MAX_SEQ:
        raise bad(f"seq {seq} is out of range [0, 2**63)")
    stamp = doc["time"]
    if not isinstance(stamp, str):
        raise bad(f"time must be a string, got {type(stamp).__name__}")
    sensor_time = _parse_time(stamp, bad)
    items = doc["values"]
    if not isinstance(items, list):
        raise bad(f"values must be a list, got {type(items).__name__}")
    if not items:
        raise bad("values is empty")
    values = tuple(_parse_value(i, item, bad) for i, item in enumerate(items))
    seen: set[str] = set()
    for i, v in enumerate(values):
        if v.quantity in seen:
            raise bad(f"values[{i}].q {v.quantity!r} repeats an earlier quantity")
        seen.add(v.quantity)
    return ParsedPayload(seq, sensor_time, values, text)


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading's worth of a message: the sensor's time and what it measured then."""

    time: str
    """RFC 3339 UTC with microseconds."""
    values: tuple[Value, ...]
    seq: int | None
    """The node's message counter (JSON contract only)."""
    dedup_key: str


@dataclass(frozen=True, slots=True)
class Decoded:
    """A valid message: its samples, in order, and its text as received."""

    samples: tuple[Sample, ...]
    text: str


def _read_json(who: str, payload: bytes, max_bytes: int) -> tuple[str, Any]:
    def bad(problem: str, reason: str) -> PayloadError:
        return PayloadError(who, reason, problem)

    if len(payload) > max_bytes:
        raise bad(
            f"payload of {len(payload)} bytes is over the {max_bytes}-byte limit", "too-large"
        )
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad(f"payload is not UTF-8 (byte {exc.start})", "not-utf8") from None
    try:
        doc = json.loads(text, parse_constant=_no_constants, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as exc:
        raise bad(f"payload is not JSON: {exc}", "not-json") from None
    return text, doc


def _values_digest(values: tuple[Value, ...]) -> str:
    flat = json.dumps([[v.quantity, v.value, v.unit] for v in values], separators=(",", ":"))
    return hashlib.blake2b(flat.encode(), digest_size=8).hexdigest()


def decode(
    fmt: PayloadFormat,
    payload: bytes,
    *,
    sensor: str,
    max_bytes: int,
    received_ns: int,
    names: Mapping[str, str] | None = None,
) -> Decoded:
    """Check one message in format ``fmt`` and return its samples.

    ``received_ns`` anchors SenML relative times; ``names`` are the sensor's
    SenML name overrides.

    Raises:
        PayloadError: naming ``sensor``, with a ``reason`` label and the field at fault.
    """
    if fmt == "json":
        p = parse_payload("", payload, max_bytes, sensor=sensor)
        key = f"src_seq:{p.seq}@{p.time}"
        return Decoded((Sample(p.time, p.values, p.seq, key),), p.text)
    text, doc = _read_json(sensor, payload, max_bytes)
    try:
        groups = parse_senml(doc, received_ns, names)
    except SenmlError as exc:
        raise PayloadError(sensor, "bad-senml", str(exc)) from None
    samples = tuple(
        Sample(t, values, None, f"senml:{t}:{_values_digest(values)}") for t, values in groups
    )
    return Decoded(samples, text)
