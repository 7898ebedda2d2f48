"""SenML (RFC 8428) JSON packs turned into timed values, pure.

``parse_senml`` takes a decoded JSON document, the receive time and the
sensor's name overrides, and returns one ``(time, values)`` pair per distinct
record time, in ascending time order whatever the order of the records (RFC
8428's examples put the newest first): QC must judge each sensor's samples in
the order they were taken. Anything it cannot use raises ``SenmlError``
naming the record and the label at fault.

Resolution (RFC 8428 §4.6): a base label (``bn``, ``bt``, ``bu``, ``bv``,
``bver``) applies to its own record and every later one until changed; a
record's name is ``bn + n``, its time ``bt + t``, its value ``bv + v``, its
unit ``u`` or else ``bu``. A resolved time of 2**28 s or more is absolute Unix
time; a smaller one (including any negative one) is relative to the receive
time. Labels ending in ``_`` must be understood (§4.4), so a pack carrying one
is refused; other unknown labels are ignored.

Only numeric records (``v``) become values. String, boolean and data records
(``vs``, ``vb``, ``vd``) and sums (``s``) are checked and skipped; the pack
text stays in the reading's ``raw`` field. A record with only base labels is
allowed (some nodes send a header record).

Names. A record's *short name* is its resolved name after the last ``:`` or
``/`` (``urn:dev:mac:b827eb01:temp`` → ``temp``). The quantity is, in order:
the sensor's ``names`` override for the full resolved name, its override for
the short name, ``DEFAULT_NAMES`` for the short name in lower case, and
otherwise the short name itself (logged as sent: never dropped).

Units. A quantity in ``QUANTITY_UNITS`` is logged in that unit: the record's
SenML unit must be it or convert to it through ``CONVERSIONS`` (RFC 8428 /
RFC 8798 unit names; ``%`` is refused as ambiguous, send ``/100``). Any other
quantity keeps the unit as sent. Every numeric record needs a unit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from gateway.pipeline import Value

__all__ = [
    "CONVERSIONS",
    "DEFAULT_NAMES",
    "QUANTITY_UNITS",
    "SENML_VERSION",
    "SenmlError",
    "parse_senml",
    "short_name",
]

SENML_VERSION: Final = 10
"""The highest ``bver`` understood (RFC 8428 §4.4)."""

QUANTITY_UNITS: Final[Mapping[str, str]] = {
    "temperature": "Cel",
    "ph": "pH",
    "do": "mg/l",
    "do_sat": "/100",
    "ec": "uS/cm",
    "orp": "mV",
    "turbidity": "NTU",
    "tds": "ppm",
    "tss": "mg/l",
    "chlorophyll": "ug/l",
}
"""Quantities the gateway logs in one fixed unit (the units the serial drivers use)."""

DEFAULT_NAMES: Final[Mapping[str, str]] = {
    **{q: q for q in QUANTITY_UNITS},
    "temp": "temperature",
    "water_temp": "temperature",
    "watertemp": "temperature",
    "dissolved_oxygen": "do",
    "oxygen": "do",
    "do_mg": "do",
    "dosat": "do_sat",
    "do_pct": "do_sat",
    "cond": "ec",
    "conductivity": "ec",
    "redox": "orp",
    "turb": "turbidity",
    "chl": "chlorophyll",
    "chla": "chlorophyll",
}
"""Short SenML names (compared in lower case) and the quantity each one means."""

CONVERSIONS: Final[Mapping[tuple[str, str], tuple[float, float]]] = {
    ("K", "Cel"): (1.0, -273.15),
    ("S/m", "uS/cm"): (1e4, 0.0),
    ("V", "mV"): (1e3, 0.0),
    ("kg/m3", "mg/l"): (1e3, 0.0),
    ("g/l", "mg/l"): (1e3, 0.0),
    ("ug/l", "mg/l"): (1e-3, 0.0),
    ("kg/m3", "ug/l"): (1e6, 0.0),
    ("g/l", "ug/l"): (1e6, 0.0),
    ("mg/l", "ug/l"): (1e3, 0.0),
    ("/", "/100"): (100.0, 0.0),
}
"""(SenML unit, logged unit) → (scale, offset): logged = sent * scale + offset."""

_ABSOLUTE_S = 2**28  # RFC 8428 §4.5.3: smaller times are relative to now
_MAX_US = 253_402_300_800 * 1_000_000  # 10000-01-01: the end of RFC 3339
_MAX_LABEL = 64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-:./_]*")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NUMBER_LABELS = ("bt", "bv", "bs", "t", "v", "s", "ut")
_STRING_LABELS = ("bn", "bu", "n", "u", "vs", "vd")
_VALUE_LABELS = ("v", "vs", "vb", "vd")
_BASE_LABELS = frozenset({"bn", "bt", "bu", "bv", "bs", "bver"})


class SenmlError(ValueError):
    """A pack this gateway cannot use; the message names the record and label."""


def short_name(name: str) -> str:
    """The part of a resolved name after its last ``:`` or ``/`` (the whole name if none)."""
    tail = re.split(r"[:/]", name)[-1]
    return tail or name


def json_number(x: object) -> float:
    """A JSON number as a finite float; TypeError or ValueError says what is wrong."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise TypeError(f"must be a number, got {type(x).__name__}")
    try:
        f = float(x)
    except OverflowError:  # an integer beyond float range
        f = math.inf
    if not math.isfinite(f):
        raise ValueError("is not a finite number")
    return f


def _number(record: Mapping[str, Any], label: str, where: str, default: float = 0.0) -> float:
    if label not in record:
        return default
    try:
        return json_number(record[label])
    except (TypeError, ValueError) as exc:
        raise SenmlError(f"{where}.{label} {exc}") from None


def _check_types(record: Mapping[str, Any], where: str) -> None:
    for label in record:
        if label.endswith("_"):
            raise SenmlError(
                f"{where}.{label} is a must-understand label this gateway does not know"
            )
    for label in _NUMBER_LABELS:
        _number(record, label, where)
    for label in _STRING_LABELS:
        if label in record and not isinstance(record[label], str):
            raise SenmlError(
                f"{where}.{label} must be a string, got {type(record[label]).__name__}"
            )
    if "vb" in record and not isinstance(record["vb"], bool):
        raise SenmlError(f"{where}.vb must be true or false, got {type(record['vb']).__name__}")
    if "bver" in record:
        ver = record["bver"]
        if isinstance(ver, bool) or not isinstance(ver, int) or ver < 1:
            raise SenmlError(f"{where}.bver must be a positive integer, got {ver!r}")
        if ver > SENML_VERSION:
            raise SenmlError(f"{where}.bver {ver} is newer than SenML version {SENML_VERSION}")
    present = [label for label in _VALUE_LABELS if label in record]
    if len(present) > 1:
        raise SenmlError(f"{where} has more than one value ({', '.join(present)})")


def _time_text(us: int, where: str) -> str:
    if not 0 <= us < _MAX_US:
        raise SenmlError(f"{where}.t resolves to a time outside 1970..9999")
    return (_EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _quantity(name: str, names: Mapping[str, str]) -> str:
    short = short_name(name)
    if name in names:
        return names[name]
    if short in names:
        return names[short]
    return DEFAULT_NAMES.get(short.lower(), short)


def _convert(value: float, unit: str, quantity: str, where: str) -> tuple[float, str]:
    want = QUANTITY_UNITS.get(quantity)
    if want is None or unit == want:
        return value, unit
    rule = CONVERSIONS.get((unit, want))
    if rule is None:
        hint = " ('%' is ambiguous in SenML: send '/100')" if unit == "%" else ""
        raise SenmlError(
            f"{where}.u {unit!r} does not fit quantity {quantity!r} (logged in {want!r}){hint}"
        )
    scale, offset = rule
    # 12 significant digits drop the binary noise of the scaling (0.03501 S/m → 350.1 uS/cm).
    return float(f"{value * scale + offset:.12g}"), want


def parse_senml(
    doc: object, received_ns: int, names: Mapping[str, str] | None = None
) -> tuple[tuple[str, tuple[Value, ...]], ...]:
    """Resolve a SenML pack into ``(RFC 3339 UTC time, values)`` groups, oldest first.

    ``received_ns`` anchors relative times; ``names`` maps full or short
    SenML names to quantities before ``DEFAULT_NAMES``.

    Raises:
        SenmlError: the pack is malformed or cannot be logged; the message
            names the record (``records[i]``) and the label.
    """
    names = names or {}
    if not isinstance(doc, list):
        raise SenmlError(f"a SenML pack must be a JSON array, got {type(doc).__name__}")
    if not doc:
        raise SenmlError("the SenML pack is empty")
    base_name, base_time, base_unit, base_value = "", 0.0, None, 0.0
    groups: dict[int, tuple[str, dict[str, Value]]] = {}  # by time in microseconds
    for i, record in enumerate(doc):
        where = f"records[{i}]"
        if not isinstance(record, dict):
            raise SenmlError(f"{where} must be an object, got {type(record).__name__}")
        _check_types(record, where)
        base_name = record.get("bn", base_name)
        base_time = _number(record, "bt", where, base_time)
        base_unit = record.get("bu", base_unit)
        base_value = _number(record, "bv", where, base_value)
        if set(record) <= _BASE_LABELS:
            continue  # a header record: base labels only
        if not any(label in record for label in (*_VALUE_LABELS, "s")):
            raise SenmlError(f"{where} has no value (v, vs, vb, vd or s)")
        if "v" not in record:
            continue  # string, boolean, data or sum: not a measurement we log
        name = base_name + record.get("n", "")
        if not name:
            raise SenmlError(f"{where} has no name (n or bn)")
        if len(name) > 255 or _NAME.fullmatch(name) is None:
            raise SenmlError(f"{where}.n: name {name[:80]!r} breaks the RFC 8428 name rules")
        unit = record.get("u", base_unit)
        if unit is None:
            raise SenmlError(f"{where} ({name}) has no unit (u or bu)")
        if not unit or len(unit) > _MAX_LABEL or not unit.isprintable():
            raise SenmlError(
                f"{where}.u {unit[:80]!r} must be 1 to {_MAX_LABEL} printable characters"
            )
        quantity = _quantity(name, names)
        if len(quantity) > _MAX_LABEL:
            raise SenmlError(
                f"{where}.n: quantity {quantity[:80]!r} is over {_MAX_LABEL} characters"
            )
        value = base_value + _number(record, "v", where, 0.0)
        if not math.isfinite(value):
            raise SenmlError(f"{where}.v plus the base value is not a finite number")
        value, unit = _convert(value, unit, quantity, where)
        seconds = base_time + _number(record, "t", where, 0.0)
        if not math.isfinite(seconds) or abs(seconds) > 1e12:
            raise SenmlError(f"{where}.t resolves to a time outside 1970..9999")
        us = round(seconds * 1_000_000)
        if seconds < _ABSOLUTE_S:
            us += received_ns // 1000
        stamp, group = groups.setdefault(us, (_time_text(us, where), {}))
        if quantity in group:
            raise SenmlError(f"{where} ({name}) repeats quantity {quantity!r} at {stamp}")
        group[quantity] = Value(quantity, value, unit)
    if not groups:
        raise SenmlError("the SenML pack has no numeric record (v)")
    return tuple((groups[us][0], tuple(groups[us][1].values())) for us in sorted(groups))
