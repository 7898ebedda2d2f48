"""Atlas Scientific EZO circuits (pH, ORP, RTD, DO, EC) over UART.

Three layers (sensor-protocols §1):

- A pure parser. ``parse_line`` classifies one line as a ``StatusLine``
  (``*OK``, ``*ER``, ``*RS`` ...), a ``QueryReply`` (``?I,pH,2.16``,
  ``?,O,EC,TDS``, ``?*OK,1``) or a ``DataLine`` (``7.156``, ``412.0,1.025``,
  ``no output``), case-insensitively, and raises ProtocolError for anything
  else. ``parse_reading`` turns a data line into named values for a circuit
  and its enabled outputs; ``parse_identity``, ``parse_outputs`` and
  ``parse_scale`` read the ``i``, ``O,?`` and RTD ``S,?`` replies;
  ``interpret`` does all of it for one received line without raising.
- ``EzoSource``, the driver. It opens the port, discards stale
  continuous-mode lines, turns response codes on (``*OK,1``), stops
  continuous mode (``C,0``), checks the circuit's identity (``i``, recorded
  as a ``sensor-info`` event), sets or learns the enabled outputs (EC, DO)
  or the temperature scale (RTD), then either polls ``R`` every
  ``interval_s`` on a fixed cadence (``mode = "poll"``) or switches the
  circuit to ``C,<interval_s>`` and reads its stream, recording a Gap when
  lines stop coming (``mode = "continuous"``). A reading is acknowledged by
  awaiting ``Sink.submit`` (the log commit) before the next poll. Garbage,
  ``*ER``, ``*OV``/``*UV`` and timeouts are reported with ``Sink.reject``;
  ``*RS``/``*RE`` (a reboot) and ``*SL`` (sleep) re-run the start sequence;
  a broken link or too many timeouts in a row close the port, and it is
  reopened (following the ``/dev/serial/by-id`` symlink anew) after a capped,
  jittered back-off.
- Technician tools: ``probe_ezo`` (one reading with the raw exchanges) and
  ``scan_ezo`` (find a circuit on a port across baud rates).

Temperature compensation: an RTD source with a ``site`` records its readings
in the shared ``SiteTemperatures``; a pH, EC or DO source at the same site
sends the latest as ``T,<°C>`` (before a poll, or between streamed lines)
when it moved by 0.05 °C or more. When the RTD goes stale the circuit is set
back to its factory default (25 °C, DO 20 °C). Each change of where the
compensation comes from is recorded as a ``temperature-compensation`` event.

``*OK,1`` is sent before ``C,0`` (the reference's vendor sample sends ``C,0``
first): with response codes off, ``C,0`` would get no ``*OK`` and the start
would time out. A sleeping circuit swallows the byte that wakes it and
answers ``*WA``; the ``*ER`` that the mangled command then earns is retried
once. Old firmware that knows only ``RESPONSE,1`` is tried after that.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from gateway.backoff import Backoff
from gateway.config.ezo import EZO_CIRCUITS, EZO_OUTPUTS, EzoSensorConfig
from gateway.errors import ProtocolError, SensorError, SensorTimeout
from gateway.pipeline import Event, Gap, Reading, Sink, Value
from gateway.sources.base import Exchange, Found, ProbeResult
from gateway.sources.serial_link import MAX_LINE_BYTES, SerialLink
from gateway.sources.sites import SiteTemperatures

__all__ = [
    "MEASURING_RANGES",
    "SCAN_BAUD_RATES",
    "STATUS_CODES",
    "DataLine",
    "EzoLine",
    "EzoSource",
    "Interpretation",
    "LineLink",
    "QueryReply",
    "ReadingLine",
    "Rejected",
    "StatusLine",
    "ezo_snippet",
    "interpret",
    "next_slot",
    "parse_identity",
    "parse_line",
    "parse_outputs",
    "parse_reading",
    "parse_scale",
    "probe_ezo",
    "scan_ezo",
    "to_celsius",
]

logger = logging.getLogger(__name__)

Circuit = Literal["ph", "do", "ec", "orp", "rtd"]

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


def next_slot(previous: float, interval: float, now: float) -> float:
    """The poll time after ``previous`` on its fixed cadence, skipping slots already past."""
    slot = previous + interval
    if slot < now:
        slot += math.ceil((now - slot) / interval) * interval
    return slot


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


# -- the driver -------------------------------------------------------------------------

# Temperature compensation (sensor-protocols §1.3, §1.5): the circuits that take `T,`,
# and the value each falls back to (its factory default) when the site's RTD goes stale.
_COMPENSATED_DEFAULT_C = {"ph": 25.0, "ec": 25.0, "do": 20.0}
_COMPENSATION_STEP_C = 0.05  # resend T only when the water moved at least this much
_QUIET_S = 0.35  # silence that means the circuit has finished talking (generic delay 300 ms)
_GAP_FACTOR = 1.5  # a streamed line later than this many intervals reveals missed lines


class LineLink(Protocol):
    """What the driver needs of a link: ``SerialLink``, or a recorder around one."""

    async def readline(self, timeout: float) -> bytes: ...  # noqa: ASYNC109

    async def write(self, data: bytes) -> None: ...

    def discard_input(self) -> None: ...


class _IdentityMismatch(SensorError):
    """The port answers as another kind of circuit than configured."""


class _ErrorReply(ProtocolError):
    """A command was answered ``*ER``."""


class _Restart(Exception):
    """The circuit rebooted (``*RS``/``*RE``) or went to sleep (``*SL``): start again."""


class EzoSource:
    """Reads one EZO circuit, polled or streaming; ``run`` reads until cancelled.

    Args:
        config: the sensor's configuration.
        sites: shared site temperatures: an RTD source records its readings
            there, pH/EC/DO sources at the same site send them as ``T,``.
            None: no compensation.
        clock: receive time source, ``time.time_ns`` by default.
        backoff: reconnect delays (default: 0.5 s doubling to 30 s, jittered).
        max_timeouts: consecutive timeouts that count as a broken link.
        identity_retry_s: wait before looking again at a port that answers as
            the wrong kind of circuit.
    """

    def __init__(
        self,
        config: EzoSensorConfig,
        *,
        sites: SiteTemperatures | None = None,
        clock: Callable[[], int] = time.time_ns,
        backoff: Backoff | None = None,
        max_timeouts: int = 3,
        identity_retry_s: float = 60.0,
    ) -> None:
        if max_timeouts < 1:
            raise ValueError("max_timeouts must be >= 1")
        self.config = config
        self.name = config.id
        self._sites = sites
        self._clock = clock
        self._backoff = backoff if backoff is not None else Backoff()
        self._max_timeouts = max_timeouts
        self._identity_retry_s = identity_retry_s
        self._outputs: tuple[str, ...] = ()
        self._units: dict[str, str] = {}
        self._timeouts = 0
        self._reported: tuple[str, str] | None = None
        self._comp_sent: float | None = None  # T last acknowledged by the circuit
        self._comp_source: str | None = None  # RTD sensor id, "default", or None (never sent)
        self._last_line_ns: int | None = None  # continuous mode: last reading received
        self.identity: tuple[str, str] | None = None
        """(type, firmware) of the circuit last seen, e.g. ("PH", "2.16")."""

    @property
    def compensates(self) -> bool:
        """Whether this source sends ``T,`` from its site's RTD."""
        cfg = self.config
        return (
            self._sites is not None
            and cfg.site is not None
            and cfg.temperature_compensation
            and cfg.circuit in _COMPENSATED_DEFAULT_C
        )

    async def run(self, sink: Sink) -> None:
        """Read until cancelled; reopen the port after failures. Never raises for bad input."""
        cfg = self.config
        while True:
            try:
                async with SerialLink(cfg.port, cfg.baudrate, sensor=self.name) as link:
                    logger.info("%s: opened %s at %d baud", self.name, cfg.port, cfg.baudrate)
                    await self._serve(link, sink)
            except _IdentityMismatch as exc:
                sink.reject(self.name, "identity-mismatch", exc.problem)
                delay = self._identity_retry_s
            except SensorError as exc:
                delay = self._backoff.next_delay()
                logger.warning("%s: %s; reopening in %.2f s", self.name, exc.problem, delay)
            await asyncio.sleep(delay)

    async def _serve(self, link: LineLink, sink: Sink) -> None:
        continuous = self.config.mode == "continuous"
        while True:
            await self._start(link, sink, stream=continuous)
            try:
                if continuous:
                    await self._stream(link, sink)
                else:
                    await self._poll_loop(link, sink)
            except _Restart as exc:
                logger.warning("%s: %s; running the start sequence again", self.name, exc)
                await self._drain(link)

    async def _drain(self, link: LineLink) -> None:
        """Let the circuit finish talking (the rest of a reboot, a late reply), dropping it.

        Without this a reply still on its way pairs with the next command and every
        answer of the start sequence is one behind.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.timeout_s
        while (left := deadline - loop.time()) > 0:
            try:
                raw = await link.readline(min(_QUIET_S, left))
            except SensorTimeout:
                return
            except ProtocolError:
                continue
            logger.debug("%s: dropped %r after a restart notice", self.name, raw)

    # -- start sequence ------------------------------------------------------------------

    async def _start(self, link: LineLink, sink: Sink, *, stream: bool) -> None:
        cfg = self.config
        self._timeouts = 0
        self._comp_sent = None  # a rebooted DO circuit forgot its T; resend in any case
        link.discard_input()
        await self._enable_response_codes(link, sink)
        await self._command(link, sink, "C,0")
        reply = await self._command(link, sink, "i", want="I")
        assert reply is not None
        kind, firmware = parse_identity(reply.text, sensor=self.name)
        self.identity = (kind, firmware)
        if kind.lower() != cfg.circuit:
            raise _IdentityMismatch(
                self.name,
                f"{cfg.port} answers as an EZO-{kind} (firmware {firmware}), but the "
                f"sensor is configured as circuit {cfg.circuit!r}; check the wiring "
                "or the config",
            )
        if cfg.circuit in EZO_OUTPUTS:
            await self._select_outputs(link, sink)
        if cfg.circuit == "rtd":
            await self._read_scale(link, sink)
        if (kind, firmware) != self._reported:
            detail: dict[str, object] = {
                "sensor": self.name,
                "circuit": kind,
                "firmware": firmware,
                "port": cfg.port,
                "baudrate": cfg.baudrate,
                "mode": cfg.mode,
            }
            if cfg.circuit in EZO_OUTPUTS:
                detail["outputs"] = list(self._outputs)
            if self._units:
                detail["units"] = dict(self._units)
            await sink.submit_event(Event("sensor-info", self._clock(), detail))
            self._reported = (kind, firmware)
        if self.compensates:
            await self._compensate(link, sink)
        if stream:
            await self._command(link, sink, f"C,{int(cfg.interval_s)}")
        logger.info(
            "%s: EZO-%s firmware %s ready (%s)%s",
            self.name,
            kind,
            firmware,
            f"continuous, every {int(cfg.interval_s)} s" if stream else "polled",
            f", outputs {','.join(self._outputs) or 'none'}" if cfg.circuit in EZO_OUTPUTS else "",
        )

    async def _enable_response_codes(self, link: LineLink, sink: Sink) -> None:
        last: ProtocolError | None = None
        for command in ("*OK,1", "*OK,1", "RESPONSE,1"):
            try:
                await self._command(link, sink, command)
                return
            except _ErrorReply as exc:
                last = exc
        assert last is not None
        raise last

    async def _select_outputs(self, link: LineLink, sink: Sink) -> None:
        cfg = self.config
        wanted = cfg.outputs
        if wanted is not None:
            for name in EZO_OUTPUTS[cfg.circuit]:
                await self._command(link, sink, f"O,{name},{1 if name in wanted else 0}")
        reply = await self._command(link, sink, "O,?", want="O")
        assert reply is not None
        self._outputs = parse_outputs(cfg.circuit, reply.text, sensor=self.name)
        if wanted is not None and self._outputs != wanted:
            sink.reject(
                self.name,
                "outputs-mismatch",
                f"asked for outputs {','.join(wanted)} but the circuit reports "
                f"{','.join(self._outputs) or 'none'}; reading what it sends",
            )

    async def _read_scale(self, link: LineLink, sink: Sink) -> None:
        try:
            reply = await self._command(link, sink, "S,?", want="S")
        except _ErrorReply:
            logger.info("%s: the circuit has no S,? query; assuming °C", self.name)
            self._units = {}
            return
        assert reply is not None
        unit = parse_scale(reply.text, sensor=self.name)
        self._units = {} if unit == "Cel" else {"temperature": unit}

    async def _command(
        self, link: LineLink, sink: Sink, command: str, *, want: str | None = None
    ) -> QueryReply | None:
        """Send a command outside a reading; read to its ``*OK``, keeping the ``?<want>`` reply."""
        await link.write(command.encode("ascii") + b"\r")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.timeout_s
        found: QueryReply | None = None
        while True:
            try:
                raw = await link.readline(deadline - loop.time())
                line = parse_line(raw, sensor=self.name)
            except SensorTimeout:
                sink.reject(
                    self.name,
                    "timeout",
                    f"no *OK within {self.config.timeout_s} s after {command!r}",
                )
                raise
            except ProtocolError as exc:
                sink.reject(self.name, "garbage", f"after {command!r}: {exc.problem}")
                continue
            if isinstance(line, QueryReply) and line.key == want:
                found = line
            elif isinstance(line, StatusLine) and line.code == "*ER":
                raise _ErrorReply(self.name, f"{command!r} was answered *ER")
            elif isinstance(line, StatusLine) and line.code == "*OK":
                if want is not None and found is None:
                    raise ProtocolError(self.name, f"{command!r} was answered *OK without ?{want}")
                return found
            elif isinstance(line, StatusLine) and line.code in ("*OV", "*UV"):
                self._supply_fault(sink, line.code)
            else:
                logger.debug("%s: skipped %r while waiting for %r", self.name, line, command)

    # -- temperature compensation --------------------------------------------------------

    def _compensation_due(self) -> tuple[float, str] | None:
        """(°C, source) to send as ``T,`` now, or None when the circuit is up to date."""
        if not self.compensates:
            return None
        assert self._sites is not None
        assert self.config.site is not None
        fresh = self._sites.fresh(self.config.site)
        if fresh is not None:
            target, source = round(fresh.celsius, 2), fresh.sensor
        elif self._comp_source is None:
            return None  # never compensated: leave the circuit's own setting alone
        else:
            # The RTD went quiet: fall back to the circuit's factory default rather
            # than compensate forever with a temperature that is no longer true.
            target, source = _COMPENSATED_DEFAULT_C[self.config.circuit], "default"
        sent = self._comp_sent
        if (
            sent is not None
            and source == self._comp_source
            and abs(target - sent) < _COMPENSATION_STEP_C
        ):
            return None
        return target, source

    async def _compensation_done(self, sink: Sink, celsius: float, source: str) -> None:
        self._comp_sent = celsius
        if source != self._comp_source:
            if source == "default":
                logger.warning(
                    "%s: site %s temperature is stale; compensating at the default %.1f °C",
                    self.name,
                    self.config.site,
                    celsius,
                )
            await sink.submit_event(
                Event(
                    "temperature-compensation",
                    self._clock(),
                    {
                        "sensor": self.name,
                        "site": self.config.site,
                        "source": source,
                        "temperature_c": celsius,
                    },
                )
            )
            self._comp_source = source

    async def _compensate(self, link: LineLink, sink: Sink) -> None:
        """Poll mode and start: send ``T,`` and wait for its ``*OK``."""
        due = self._compensation_due()
        if due is None:
            return
        celsius, source = due
        try:
            await self._command(link, sink, f"T,{celsius:.2f}")
        except _ErrorReply as exc:
            sink.reject(self.name, "error-reply", exc.problem)
            return
        await self._compensation_done(sink, celsius, source)

    def _publish_temperature(self, values: tuple[Value, ...]) -> None:
        cfg = self.config
        if cfg.circuit != "rtd" or cfg.site is None or self._sites is None or not values:
            return
        reading = values[0]
        self._sites.update(cfg.site, to_celsius(reading.value, reading.unit), self.name)

    # -- poll mode -----------------------------------------------------------------------

    async def _poll_loop(self, link: LineLink, sink: Sink) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.interval_s
        slot = loop.time()
        while True:
            delay = slot - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.compensates:
                await self._compensate(link, sink)
            await self._poll(link, sink)
            now = loop.time()
            upcoming = next_slot(slot, interval, now)
            if upcoming - slot > interval * 1.5:
                logger.warning("%s: a poll overran its interval; skipped slot(s)", self.name)
            slot = upcoming

    async def _poll(self, link: LineLink, sink: Sink) -> None:
        """One ``R``: submit the reading, or report why there is none."""
        link.discard_input()
        await link.write(b"R\r")
        loop = asyncio.get_running_loop()
        timeout = self.config.timeout_s
        deadline = loop.time() + timeout
        data: ReadingLine | None = None
        received_ns = 0
        while True:
            try:
                raw = await link.readline(deadline - loop.time())
            except SensorTimeout:
                self._timed_out(sink, f"no *OK within {timeout} s after R")
                return
            except ProtocolError as exc:
                sink.reject(self.name, "garbage", exc.problem)
                continue
            received = self._clock()
            line = self._interpret(raw)
            if isinstance(line, Rejected):
                sink.reject(self.name, line.reason, line.detail)
            elif isinstance(line, ReadingLine):
                if data is not None:
                    sink.reject(self.name, "extra-line", f"{data.text!r} replaced by a later line")
                data, received_ns = line, received
            elif isinstance(line, QueryReply):
                logger.debug("%s: skipped unexpected %r", self.name, line.text)
            elif line.code == "*ER":
                self._timeouts = 0
                sink.reject(self.name, "error-reply", "R was answered *ER")
                return
            elif line.code == "*OK":
                self._timeouts = 0
                if data is None:
                    sink.reject(self.name, "no-reading", "R was answered *OK without a reading")
                else:
                    await self._submit(sink, data, received_ns)
                return
            else:
                self._status(sink, line.code)

    def _timed_out(self, sink: Sink, detail: str) -> None:
        self._timeouts += 1
        sink.reject(self.name, "timeout", f"{detail} ({self._timeouts} in a row)")
        if self._timeouts >= self._max_timeouts:
            raise SensorError(self.name, f"{self._timeouts} timeouts in a row")

    def _interpret(self, raw: bytes) -> Interpretation:
        return interpret(
            raw, self.config.circuit, self._outputs, sensor=self.name, units=self._units
        )

    def _status(self, sink: Sink, code: str) -> None:
        """Unsolicited response codes in the middle of reading."""
        if code in ("*RS", "*RE"):
            raise _Restart(f"circuit rebooted ({code})")
        if code == "*SL":
            raise _Restart("circuit went to sleep (*SL)")
        if code in ("*OV", "*UV"):
            self._supply_fault(sink, code)
        else:  # *WA, *DONE, a stray *OK: nothing to do
            logger.debug("%s: unsolicited %s", self.name, code)

    def _supply_fault(self, sink: Sink, code: str) -> None:
        what = "over-voltage (VCC >= 5.5 V)" if code == "*OV" else "under-voltage (VCC <= 3.1 V)"
        sink.reject(self.name, "supply-voltage", f"circuit reports {code}: {what}")

    async def _submit(self, sink: Sink, data: ReadingLine, received_ns: int) -> None:
        if not data.values:
            sink.reject(self.name, "no-output", "every output of the circuit is off (O,?)")
            return
        await sink.submit(Reading(self.name, data.values, received_ns, raw=data.text))
        self._publish_temperature(data.values)
        self._backoff.reset()

    # -- continuous mode -----------------------------------------------------------------

    async def _stream(self, link: LineLink, sink: Sink) -> None:
        """Read the circuit's own readings (``C,n``), checking they come every n seconds."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        interval = float(int(cfg.interval_s))
        patience = interval + cfg.timeout_s
        expect_by = loop.time() + patience
        pending: tuple[str, float, tuple[float, str] | None] | None = None  # command, deadline
        while True:
            if pending is None and (due := self._compensation_due()) is not None:
                command = f"T,{due[0]:.2f}"
                await link.write(command.encode("ascii") + b"\r")
                pending = (command, loop.time() + cfg.timeout_s, due)
            wait_until = expect_by if pending is None else min(expect_by, pending[1])
            try:
                raw = await link.readline(wait_until - loop.time())
            except SensorTimeout:
                now = loop.time()
                if pending is not None and now >= pending[1]:
                    sink.reject(
                        self.name,
                        "timeout",
                        f"no *OK within {cfg.timeout_s} s after {pending[0]!r}",
                    )
                    pending = None
                if now >= expect_by:
                    self._timed_out(sink, f"no reading within {patience:.1f} s in continuous mode")
                    expect_by = now + interval
                continue
            except ProtocolError as exc:
                sink.reject(self.name, "garbage", exc.problem)
                continue
            received = self._clock()
            # Any line, even a bad one, shows the circuit is talking: silence is what
            # times out. A bad line is counted as what it is.
            expect_by = loop.time() + patience
            line = self._interpret(raw)
            if isinstance(line, Rejected):
                sink.reject(self.name, line.reason, line.detail)
            elif isinstance(line, ReadingLine):
                self._timeouts = 0
                await self._stream_reading(sink, line, received, interval)
            elif isinstance(line, QueryReply):
                logger.debug("%s: skipped unexpected %r", self.name, line.text)
            elif line.code in ("*OK", "*ER") and pending is not None:
                command, _, due = pending
                pending = None
                if line.code == "*ER":
                    sink.reject(self.name, "error-reply", f"{command!r} was answered *ER")
                elif due is not None:
                    await self._compensation_done(sink, *due)
            elif line.code == "*ER":
                sink.reject(self.name, "error-reply", "unsolicited *ER in continuous mode")
            else:
                self._status(sink, line.code)

    async def _stream_reading(
        self, sink: Sink, line: ReadingLine, received_ns: int, interval: float
    ) -> None:
        last = self._last_line_ns
        if last is not None and received_ns - last > _GAP_FACTOR * interval * 1e9:
            missed = round((received_ns - last) / (interval * 1e9)) - 1
            await sink.submit_gap(
                Gap(
                    self.name,
                    f"continuous mode: about {missed} reading(s) missed",
                    last,
                    received_ns,
                )
            )
        self._last_line_ns = received_ns
        await self._submit(sink, line, received_ns)


# -- technician tools ------------------------------------------------------------------------


def _escape(data: bytes) -> str:
    """Wire bytes as readable text: printable ASCII as is, the rest escaped (``\\r``, ``\\xb0``)."""
    out: list[str] = []
    for byte in data:
        if byte == 0x0D:
            out.append("\\r")
        elif byte == 0x0A:
            out.append("\\n")
        elif byte == 0x5C:
            out.append("\\\\")
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out)


@dataclass
class _Turn:
    sent: str
    received: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class _RecordingLink:
    """A ``LineLink`` that keeps every command and every line, for ``gateway probe``."""

    def __init__(self, link: SerialLink) -> None:
        self._link = link
        self.turns: list[_Turn] = []

    def _turn(self) -> _Turn:
        if not self.turns:
            self.turns.append(_Turn(""))
        return self.turns[-1]

    async def write(self, data: bytes) -> None:
        self.turns.append(_Turn(_escape(data.rstrip(b"\r"))))
        await self._link.write(data)

    async def readline(self, timeout: float) -> bytes:  # noqa: ASYNC109
        try:
            line = await self._link.readline(timeout)
        except SensorError as exc:
            self._turn().notes.append(exc.problem)
            raise
        self._turn().received.append(_escape(line) + "\\r")
        return line

    def discard_input(self) -> None:
        self._link.discard_input()

    def exchanges(self) -> tuple[Exchange, ...]:
        return tuple(Exchange(t.sent, "".join(t.received), "; ".join(t.notes)) for t in self.turns)


class _ProbeSink:
    """Keeps what one probe produced instead of logging it."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.events: list[Event] = []
        self.rejects: list[str] = []

    async def submit(self, reading: Reading) -> bool:
        self.readings.append(reading)
        return True

    async def submit_gap(self, gap: Gap) -> None:
        return None

    async def submit_event(self, event: Event) -> None:
        self.events.append(event)

    def reject(self, sensor: str, reason: str, detail: str) -> None:
        self.rejects.append(f"{reason}: {detail}")


async def probe_ezo(cfg: EzoSensorConfig) -> ProbeResult:
    """Take one reading from a configured circuit, keeping every raw exchange.

    Runs the driver's own start sequence (response codes on, ``C,0``, ``i``,
    outputs or scale) and one ``R``. A circuit configured for continuous mode
    is left polled; the gateway switches it back when it starts. Never raises
    for a sensor problem: the result's ``error`` says what went wrong.
    """
    source = EzoSource(cfg, max_timeouts=1)
    sink = _ProbeSink()
    recorder: _RecordingLink | None = None
    error: str | None = None
    try:
        async with SerialLink(cfg.port, cfg.baudrate, sensor=cfg.id) as link:
            recorder = _RecordingLink(link)
            await source._start(recorder, sink, stream=False)
            await source._poll(recorder, sink)
    except SensorError as exc:
        error = exc.problem
    except _Restart as exc:
        error = f"{exc} during the reading; probe again"
    reading = sink.readings[0] if sink.readings else None
    if reading is None and error is None:
        error = "; ".join(sink.rejects) or "no reading"
    exchanges = recorder.exchanges() if recorder is not None else ()
    return ProbeResult(cfg.id, exchanges, reading, error)


SCAN_BAUD_RATES = (9600, 115200, 38400, 19200, 57600, 2400, 1200, 300)
"""The order ``scan_ezo`` tries: the factory rate first, then the common fast ones."""

_SCAN_TRY_S = 1.0  # per baud rate and step: `i` takes 300 ms, plus the bytes at 300 baud


def _toml_string(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid TOML basic string


def ezo_snippet(
    port: str, circuit: str, baudrate: int, outputs: Sequence[str] | None = None
) -> str:
    """A complete ``[[sensor]]`` table for a found circuit."""
    lines = [
        "[[sensor]]",
        f"id = {_toml_string(f'{circuit}-1')}",
        'driver = "ezo"',
        f"circuit = {_toml_string(circuit)}",
        f"port = {_toml_string(port)}",
        f"baudrate = {baudrate}",
        "interval_s = 10.0",
    ]
    if outputs is not None:
        lines.append(f"outputs = [{', '.join(_toml_string(o) for o in outputs)}]")
    return "\n".join(lines) + "\n"


async def _ask(link: SerialLink, command: str, key: str, within_s: float) -> QueryReply | None:
    """Send a query and return its ``?<key>`` reply, ignoring readings and noise."""
    await link.write(command.encode("ascii") + b"\r")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        try:
            raw = await link.readline(deadline - loop.time())
            line = parse_line(raw)
        except SensorTimeout:
            return None
        except ProtocolError:
            continue
        if isinstance(line, QueryReply) and line.key == key:
            return line
        if isinstance(line, StatusLine) and line.code == "*ER":
            return None


async def _quiet(link: SerialLink, within_s: float) -> None:
    """Drop what the port says until it has been silent for a moment (or time is up)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while (left := deadline - loop.time()) > 0:
        try:
            await link.readline(min(_QUIET_S, left))
        except SensorTimeout:
            return
        except ProtocolError:
            continue


async def _scan_at(port: str, baudrate: int, within_s: float) -> Found | None:
    async with SerialLink(port, baudrate, sensor="scan") as link:
        link.discard_input()
        # A lone CR ends whatever junk an earlier attempt left in the circuit's
        # buffer (and wakes a sleeping one), so `i` arrives on a clean line.
        await link.write(b"\r")
        await _quiet(link, within_s)  # its *ER, if it had junk, must not answer our `i`
        reply = await _ask(link, "i", "I", within_s)
        if reply is None:
            return None
        try:
            kind, firmware = parse_identity(reply.text)
        except ProtocolError:
            return None
        circuit = kind.lower()
        if circuit not in EZO_CIRCUITS:
            logger.info(
                "scan: %s at %d baud is an EZO-%s, which riverseal does not read",
                port,
                baudrate,
                kind,
            )
            return None
        outputs: tuple[str, ...] | None = None
        if circuit in EZO_OUTPUTS:
            found = await _ask(link, "O,?", "O", within_s)
            if found is not None:
                try:
                    outputs = parse_outputs(circuit, found.text)
                except ProtocolError:
                    outputs = None
        return Found(
            port=port,
            driver="ezo",
            description=f"Atlas Scientific EZO-{kind}, firmware {firmware}, at {baudrate} baud",
            snippet=ezo_snippet(port, circuit, baudrate, outputs),
        )


async def scan_ezo(port: str, *, budget_s: float) -> list[Found]:
    """Look for an EZO circuit on ``port``, trying its baud rates within ``budget_s``.

    Sends only a CR, ``i`` and (EC, DO) ``O,?``: nothing that changes the
    circuit. Returns one ``Found`` per circuit that answered (at most one).

    Raises:
        SensorError: the port cannot be opened.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_s
    for baudrate in SCAN_BAUD_RATES:
        left = deadline - loop.time()
        if left <= 0:
            break
        try:
            async with asyncio.timeout(left):
                found = await _scan_at(port, baudrate, min(_SCAN_TRY_S, left))
        except TimeoutError:
            break
        if found is not None:
            return [found]
    return []
