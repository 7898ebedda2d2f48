"""Modbus register profiles: one TOML file per sensor model, and the codec they drive.

A profile says, per value, where it lives (address, function code 3 or 4),
how its registers encode it (``int16``/``uint16``/``int32``/``uint32``/
``float32``, byte and word order, a scale factor or a decimal-places
register, an offset), what it means (quantity, unit), and when it is
missing (a sentinel, NaN, a status register). It may also list setup
writes (e.g. a start-measurement command) and identifying registers for
``gateway scan``. The format is documented in ``docs/modbus-profiles.md``.

Loading is strict: an unknown key, a wrong type or an impossible value
raises ConfigError naming the file and the key (``value[2].type``).

Scaling: an integer value is ``raw / 10**decimals × scale + offset``,
computed in decimal with ``scale`` and ``offset`` as written, so it keeps the
decimals they imply (``34 × 0.1`` is ``3.4``); a float32 is the device's
binary number times ``scale`` plus ``offset``.

The codec is pure: ``decode_value`` turns register words into a number and
``encode_value`` does the reverse (tests and tools use it); ``plan_reads``
merges the registers a profile needs into as few requests as its ``[read]``
limits allow, and ``decode_reading`` turns the words those requests returned
into values, missing values and errors without ever raising for bad words.

Byte and word order, for a 32-bit value whose big-endian bytes are A B C D::

    word_order  byte_order  registers      vendor notation
    big         big         [AB, CD]       1234 / ABCD
    big         little      [BA, DC]       2143 / BADC
    little      big         [CD, AB]       3412 / CDAB
    little      little      [DC, BA]       4321 / DCBA
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

from gateway.drivers.modbus.rtu import PARITIES, Parity
from gateway.errors import ConfigError
from gateway.toml_table import Table, parse_toml, read_text

__all__ = [
    "DATA_TYPES",
    "CodecError",
    "DecodedReading",
    "Identify",
    "Profile",
    "ReadBlock",
    "ReadLimits",
    "SerialDefaults",
    "SetupWrite",
    "ValueSpec",
    "decode_reading",
    "decode_value",
    "encode_value",
    "load_profile",
    "parse_profile",
    "plan_reads",
    "shipped_profiles",
]

DataType = Literal["int16", "uint16", "int32", "uint32", "float32"]
Order = Literal["big", "little"]
When = Literal["connect", "reading"]

DATA_TYPES: Mapping[str, int] = {
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
}
"""Each data type and how many registers it takes."""

_STRUCT = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "float32": ">f"}
_RAW_RANGE = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "float32": (0, 2**32 - 1),  # a float sentinel is written as its bit pattern
}
_QUANTITY = re.compile(r"[a-z][a-z0-9_]*")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
_MAX_DECIMALS = 9
MAX_READ_COUNT = 125
"""Modbus allows at most 125 registers in one read (FC 3/4)."""
MAX_WRITE_COUNT = 123


class CodecError(ValueError):
    """Register words that cannot be a value of the declared type."""


@dataclass(frozen=True, slots=True)
class ValueSpec:
    """One value of a profile: where it is and how to read it."""

    quantity: str
    unit: str
    address: int
    function: int = 3
    type: DataType = "int16"
    byte_order: Order = "big"
    word_order: Order = "big"
    scale: float = 1.0
    offset: float = 0.0
    decimals_register: int | None = None
    """Address (same function code) of a register holding the number of decimal places."""
    missing: tuple[int, ...] = ()
    """Raw values (for float32: bit patterns) that mean "not available"."""
    status_register: int | None = None
    """Address (same function code) of a status word; with ``status_bad``."""
    status_bad: tuple[int, ...] = ()
    """Status word values that mean the value is not to be trusted (missing)."""

    @property
    def count(self) -> int:
        return DATA_TYPES[self.type]


@dataclass(frozen=True, slots=True)
class SetupWrite:
    """A register write the sensor needs: once per connection, or before each reading."""

    address: int
    values: tuple[int, ...]
    function: int = 6
    when: When = "connect"
    wait_s: float = 0.0
    """Pause after the write before the next request (e.g. a measurement's duration)."""


@dataclass(frozen=True, slots=True)
class Identify:
    """A register whose value names the model (for ``gateway scan``)."""

    address: int
    equals: int
    function: int = 3


@dataclass(frozen=True, slots=True)
class SerialDefaults:
    """The model's factory serial settings; the sensor config's defaults."""

    baudrate: int = 9600
    parity: Parity = "N"
    stopbits: int = 1
    slave: int = 1


@dataclass(frozen=True, slots=True)
class ReadLimits:
    """How registers may be grouped into requests."""

    max_count: int = MAX_READ_COUNT
    max_gap: int = 0
    """Unused registers a request may span to join two values (they must exist on the device)."""
    align: int = 1
    """2 for devices that only accept reads starting on an even address with an even count."""


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: function code, first address, register count."""

    function: int
    address: int
    count: int


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    """The file's stem, e.g. ``ysi-odo-rtu``."""
    model: str
    source: str
    """Where it was loaded from, for messages."""
    values: tuple[ValueSpec, ...]
    vendor: str = ""
    description: str = ""
    serial: SerialDefaults = SerialDefaults()
    read: ReadLimits = ReadLimits()
    setup: tuple[SetupWrite, ...] = ()
    identify: tuple[Identify, ...] = ()


@dataclass(frozen=True, slots=True)
class DecodedReading:
    """What one reading's register words decoded to."""

    values: tuple[tuple[ValueSpec, float], ...]
    missing: tuple[tuple[ValueSpec, str], ...]
    """Values the device marked unavailable, with why."""
    errors: tuple[tuple[ValueSpec, str], ...]
    """Values whose words could not be decoded, with why."""


# -- codec -----------------------------------------------------------------------------


def _words_to_bytes(words: Sequence[int], byte_order: Order, word_order: Order) -> bytes:
    for w in words:
        if not isinstance(w, int) or isinstance(w, bool) or not 0 <= w <= 0xFFFF:
            raise CodecError(f"register word {w!r} is not in 0..65535")
    ordered = list(words) if word_order == "big" else list(reversed(words))
    out = bytearray()
    for w in ordered:
        pair = w.to_bytes(2, "big")
        out += pair if byte_order == "big" else pair[::-1]
    return bytes(out)


def _bytes_to_words(data: bytes, byte_order: Order, word_order: Order) -> list[int]:
    words = []
    for i in range(0, len(data), 2):
        pair = data[i : i + 2]
        words.append(int.from_bytes(pair if byte_order == "big" else pair[::-1], "big"))
    return words if word_order == "big" else words[::-1]


def _raw(spec: ValueSpec, words: Sequence[int]) -> tuple[int | float, int]:
    """The raw number and its bit pattern (the pattern is what ``missing`` lists)."""
    if len(words) != spec.count:
        raise CodecError(f"{spec.type} takes {spec.count} register(s), got {len(words)}")
    data = _words_to_bytes(words, spec.byte_order, spec.word_order)
    pattern = int.from_bytes(data, "big")
    (raw,) = struct.unpack(_STRUCT[spec.type], data)
    return raw, pattern


def _scaled(raw: int, places: int, scale: float, offset: float) -> float:
    """``raw / 10**places × scale + offset`` in decimal, with the factors as written.

    ``scale`` and ``offset`` are taken as their shortest decimal text (what the
    profile says, ``0.1``), so the result has exactly the decimals they imply and
    becomes the float nearest to it: ``34 × 0.1`` is ``3.4``, where binary
    arithmetic gives ``3.4000000000000004``.
    """
    with localcontext(prec=64):  # exact for any 32-bit raw value and 17-digit factors
        exact = Decimal(raw).scaleb(-places) * Decimal(repr(scale)) + Decimal(repr(offset))
    return float(exact)


def decode_value(
    spec: ValueSpec, words: Sequence[int], decimals: int | None = None
) -> float | None:
    """The value the words encode, or None when the device marks it missing.

    ``decimals`` is the content of the decimal-places register, if the value has one.

    Raises:
        CodecError: a word out of range, the wrong number of words, an infinite
            float, or an impossible decimal-places count.
    """
    raw, pattern = _raw(spec, words)
    if spec.type == "float32":
        if pattern in spec.missing or math.isnan(raw):
            return None
        if math.isinf(raw):
            raise CodecError(f"{spec.quantity}: infinite float (0x{pattern:08X})")
        value = raw * spec.scale + spec.offset  # a binary float on the wire: no decimals
    elif raw in spec.missing:
        return None
    else:
        places = 0
        if spec.decimals_register is not None:
            if decimals is None:
                raise CodecError(f"{spec.quantity}: the decimal-places register was not read")
            if not 0 <= decimals <= _MAX_DECIMALS:
                raise CodecError(
                    f"{spec.quantity}: decimal-places register holds {decimals}, "
                    f"expected 0..{_MAX_DECIMALS}"
                )
            places = decimals
        value = _scaled(int(raw), places, spec.scale, spec.offset)
    if not math.isfinite(value):
        raise CodecError(f"{spec.quantity}: {value} after scaling is not finite")
    return value


def encode_value(spec: ValueSpec, value: float, decimals: int | None = None) -> list[int]:
    """The register words that ``decode_value`` reads back as ``value`` (rounded to the type).

    Raises:
        CodecError: the value does not fit the type after scaling.
    """
    number = (value - spec.offset) / spec.scale
    if spec.decimals_register is not None:
        if decimals is None or not 0 <= decimals <= _MAX_DECIMALS:
            raise CodecError(f"{spec.quantity}: need decimal places 0..{_MAX_DECIMALS}")
        number *= 10**decimals
    if spec.type == "float32":
        try:
            data = struct.pack(">f", number)
        except OverflowError as exc:
            raise CodecError(f"{spec.quantity}: {value} does not fit a float32") from exc
    else:
        low, high = _RAW_RANGE[spec.type]
        if not math.isfinite(number):
            raise CodecError(f"{spec.quantity}: {value} is not finite")
        raw = round(number)
        if not low <= raw <= high:
            raise CodecError(f"{spec.quantity}: {value} is {raw} raw, outside {spec.type}")
        data = struct.pack(_STRUCT[spec.type], raw)
    return _bytes_to_words(data, spec.byte_order, spec.word_order)


def _spans(spec: ValueSpec) -> list[tuple[int, int]]:
    """Register ranges (first, last) a value needs; a range is never split across reads."""
    spans = [(spec.address, spec.address + spec.count - 1)]
    for extra in (spec.decimals_register, spec.status_register):
        if extra is not None:
            spans.append((extra, extra))
    return spans


def plan_reads(profile: Profile) -> tuple[ReadBlock, ...]:
    """The read requests that fetch every register the profile's values need."""
    limits = profile.read
    blocks: list[ReadBlock] = []
    for function in sorted({v.function for v in profile.values}):
        spans = sorted({s for v in profile.values if v.function == function for s in _spans(v)})
        start = end = -1  # current block covers start..end inclusive
        for lo, hi in spans:
            if start >= 0:
                if lo <= end:  # overlaps what the block already covers
                    end = max(end, hi)
                    continue
                candidate = _aligned(function, start, hi, limits.align)
                if lo - end - 1 <= limits.max_gap and candidate.count <= limits.max_count:
                    end = hi
                    continue
                blocks.append(_aligned(function, start, end, limits.align))
            start, end = lo, hi
        if start >= 0:
            blocks.append(_aligned(function, start, end, limits.align))
    return tuple(blocks)


def _aligned(function: int, start: int, end: int, align: int) -> ReadBlock:
    first = start - start % align
    count = end - first + 1
    count += -count % align
    return ReadBlock(function, first, count)


def decode_reading(profile: Profile, words: Mapping[ReadBlock, Sequence[int]]) -> DecodedReading:
    """Decode every value from the words each block returned. Never raises for bad words."""
    bank: dict[tuple[int, int], int] = {}
    for block, regs in words.items():
        for i, w in enumerate(regs[: block.count]):
            bank[(block.function, block.address + i)] = w
    values: list[tuple[ValueSpec, float]] = []
    missing: list[tuple[ValueSpec, str]] = []
    errors: list[tuple[ValueSpec, str]] = []
    for spec in profile.values:
        try:
            regs = [
                bank[(spec.function, a)] for a in range(spec.address, spec.address + spec.count)
            ]
            if spec.status_register is not None:
                status = bank[(spec.function, spec.status_register)]
                if status in spec.status_bad:
                    missing.append((spec, f"status register {spec.status_register} = {status}"))
                    continue
            decimals = (
                bank[(spec.function, spec.decimals_register)]
                if spec.decimals_register is not None
                else None
            )
            value = decode_value(spec, regs, decimals)
        except KeyError as exc:
            errors.append((spec, f"register {exc.args[0][1]} was not read"))
            continue
        except CodecError as exc:
            errors.append((spec, str(exc)))
            continue
        if value is None:
            missing.append((spec, f"sentinel {_hex(regs)}"))
        else:
            values.append((spec, value))
    return DecodedReading(tuple(values), tuple(missing), tuple(errors))


def _hex(words: Sequence[int]) -> str:
    return "0x" + "".join(f"{w:04X}" for w in words)


# -- loading ---------------------------------------------------------------------------


def _address(t: Table, name: str, *, width: int = 1, required: bool = True) -> int | None:
    if not required and name not in t.data:
        t.used.add(name)
        return None
    address = t.get(name, int, required=True)
    return t.check(
        name, address, lambda a: a >= 0 and a + width - 1 <= 0xFFFF, "is not a register address"
    )


def _function(t: Table, default: int, allowed: tuple[int, ...] = (3, 4)) -> int:
    fc = t.get("function", int, default)
    return t.check("function", fc, lambda f: f in allowed, f"is not one of {allowed}")


def _order(t: Table, name: str, default: Order) -> Order:
    return t.one_of(name, t.get(name, str, default), get_args(Order), "is not 'big' or 'little'")


def _int_list(t: Table, name: str, low: int, high: int) -> tuple[int, ...]:
    items = t.get(name, list, [])
    for i, item in enumerate(items):
        if not isinstance(item, int) or isinstance(item, bool) or not low <= item <= high:
            raise ConfigError(f"{t.where}.{name}[{i}]", f"{item!r} is not an integer {low}..{high}")
    return tuple(items)


def _finite(x: float) -> bool:
    return math.isfinite(x)


def _parse_value(t: Table, defaults: tuple[int, Order, Order]) -> ValueSpec:
    fc_default, byte_default, word_default = defaults
    quantity = t.get("quantity", str, required=True)
    t.check(
        "quantity", quantity, lambda q: bool(_QUANTITY.fullmatch(q)), "is not a name like 'do_sat'"
    )
    unit = t.get("unit", str, required=True)
    t.check("unit", unit, lambda u: bool(u) and u.isprintable(), "is not a unit")
    typ = t.one_of("type", t.get("type", str, required=True), get_args(DataType))
    address = _address(t, "address", width=DATA_TYPES[typ])
    assert address is not None
    scale = t.get("scale", float, 1.0)
    t.check("scale", scale, lambda s: math.isfinite(s) and s != 0, "must be finite and not 0")
    offset = t.check("offset", t.get("offset", float, 0.0), _finite, "must be finite")
    decimals = _address(t, "decimals_register", required=False)
    if decimals is not None and typ == "float32":
        raise ConfigError(f"{t.where}.decimals_register", "is for integer types, not float32")
    low, high = _RAW_RANGE[typ]
    missing = _int_list(t, "missing", low, high)
    status = _address(t, "status_register", required=False)
    status_bad = _int_list(t, "status_bad", 0, 0xFFFF)
    if (status is None) != (not status_bad):
        raise ConfigError(
            f"{t.where}.{'status_bad' if status is not None else 'status_register'}",
            "status_register and status_bad go together",
        )
    spec = ValueSpec(
        quantity=quantity,
        unit=unit,
        address=address,
        function=_function(t, fc_default),
        type=typ,
        byte_order=_order(t, "byte_order", byte_default),
        word_order=_order(t, "word_order", word_default),
        scale=scale,
        offset=offset,
        decimals_register=decimals,
        missing=missing,
        status_register=status,
        status_bad=status_bad,
    )
    t.done()
    return spec


def _parse_setup(t: Table) -> SetupWrite:
    when = t.one_of(
        "when", t.get("when", str, "connect"), get_args(When), "is not 'connect' or 'reading'"
    )
    function = _function(t, 6, (6, 16))
    values = _int_list(t, "values", 0, 0xFFFF)
    limit = 1 if function == 6 else MAX_WRITE_COUNT
    t.check("values", values, lambda v: 1 <= len(v) <= limit, f"must hold 1..{limit} word(s)")
    address = _address(t, "address", width=len(values))
    assert address is not None
    wait = t.get("wait_s", float, 0.0)
    setup = SetupWrite(
        address=address,
        values=values,
        function=function,
        when=when,
        wait_s=t.check("wait_s", wait, lambda w: 0 <= w <= 60, "must be 0..60 s"),
    )
    t.done()
    return setup


def _parse_identify(t: Table, fc_default: int) -> Identify:
    address = _address(t, "address")
    assert address is not None
    equals = t.get("equals", int, required=True)
    t.check("equals", equals, lambda e: 0 <= e <= 0xFFFF, "is not a register value 0..65535")
    ident = Identify(address=address, equals=equals, function=_function(t, fc_default))
    t.done()
    return ident


def _parse_serial(t: Table | None) -> SerialDefaults:
    d = SerialDefaults()
    if t is None:
        return d
    baud = t.check("baudrate", t.get("baudrate", int, d.baudrate), lambda b: b > 0, "must be > 0")
    parity = t.one_of("parity", t.get("parity", str, d.parity).upper(), PARITIES)
    stopbits = t.get("stopbits", int, d.stopbits)
    t.check("stopbits", stopbits, lambda s: s in (1, 2), "is not 1 or 2")
    slave = t.get("slave", int, d.slave)
    t.check("slave", slave, lambda s: 1 <= s <= 247, "is not a slave id 1..247")
    t.done()
    return SerialDefaults(baud, parity, stopbits, slave)


def _parse_read(t: Table | None) -> ReadLimits:
    d = ReadLimits()
    if t is None:
        return d
    align = t.get("align", int, d.align)
    t.check("align", align, lambda a: a in (1, 2), "is not 1 or 2")
    count = t.get("max_count", int, d.max_count - d.max_count % align)
    t.check("max_count", count, lambda c: 1 <= c <= MAX_READ_COUNT, f"must be 1..{MAX_READ_COUNT}")
    gap = t.get("max_gap", int, d.max_gap)
    t.check("max_gap", gap, lambda g: 0 <= g < MAX_READ_COUNT, f"must be 0..{MAX_READ_COUNT - 1}")
    t.done()
    if align == 2 and count % 2:
        raise ConfigError(f"{t.where}.max_count", "must be even when align = 2")
    return ReadLimits(count, gap, align)


def _check_overlaps(values: Sequence[ValueSpec]) -> None:
    seen: dict[str, int] = {}
    owner: dict[tuple[int, int], int] = {}
    for i, v in enumerate(values):
        if v.quantity in seen:
            raise ConfigError(
                f"value[{i}].quantity", f"{v.quantity!r} is already value[{seen[v.quantity]}]"
            )
        seen[v.quantity] = i
        for reg in range(v.address, v.address + v.count):
            j = owner.setdefault((v.function, reg), i)
            if j != i:
                raise ConfigError(
                    f"value[{i}].address", f"register {reg} (FC{v.function}) is also value[{j}]'s"
                )


def _check_limits(profile: Profile) -> None:
    for i, v in enumerate(profile.values):
        for lo, hi in _spans(v):
            if _aligned(v.function, lo, hi, profile.read.align).count > profile.read.max_count:
                raise ConfigError(
                    f"value[{i}].type", f"{v.type} does not fit one read of read.max_count"
                )


def _build(root: Table, name: str, source: str) -> Profile:
    model = root.get("model", str, required=True)
    root.check("model", model, lambda m: bool(m.strip()), "must not be empty")
    fc = _function(root, 3)
    defaults = (fc, _order(root, "byte_order", "big"), _order(root, "word_order", "big"))
    values = tuple(_parse_value(v, defaults) for v in root.tables("value"))
    if not values:
        raise ConfigError("value", "a profile needs at least one [[value]]")
    _check_overlaps(values)
    profile = Profile(
        name=name,
        model=model,
        source=source,
        values=values,
        vendor=root.get("vendor", str, ""),
        description=root.get("description", str, ""),
        serial=_parse_serial(root.table("serial")),
        read=_parse_read(root.table("read")),
        setup=tuple(_parse_setup(s) for s in root.tables("setup")),
        identify=tuple(_parse_identify(s, fc) for s in root.tables("identify")),
    )
    root.done()
    _check_limits(profile)
    return profile


def parse_profile(data: Any, *, name: str, source: str) -> Profile:
    """Build a profile from parsed TOML; errors name ``source`` and the key."""
    try:
        return _build(Table(data, ""), name, source)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc.where}", exc.problem) from None


def _shipped_dir() -> Path:
    return Path(str(resources.files("gateway.drivers.modbus.profiles")))


def shipped_profiles() -> dict[str, Path]:
    """Name → file of every profile shipped with the gateway."""
    return {p.stem: p for p in sorted(_shipped_dir().glob("*.toml"))}


def load_profile(ref: str, *, base: Path | None = None) -> Profile:
    """Load a profile by shipped name (``ysi-odo-rtu``) or by file path.

    A path is anything ending in ``.toml`` or containing a slash; a relative
    path is taken from ``base`` (default: the working directory).

    Raises:
        ConfigError: no such profile, unreadable file, bad TOML, or an invalid
            profile (naming the file and key).
    """
    if ref.endswith(".toml") or "/" in ref:
        path = Path(ref)
        if not path.is_absolute() and base is not None:
            path = base / path
        name = path.stem
    else:
        shipped = shipped_profiles()
        if ref not in shipped:
            raise ConfigError(
                repr(ref), f"is not a shipped profile ({', '.join(shipped)}) nor a .toml path"
            )
        path, name = shipped[ref], ref
    if not _NAME.fullmatch(name.lower()):
        raise ConfigError(str(path), "a profile file name must be like 'vendor-model.toml'")
    data = parse_toml(read_text(path), path)
    return parse_profile(data, name=name, source=str(path))
