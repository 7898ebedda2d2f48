"""Atlas Scientific EZO circuits (pH, ORP, RTD, DO, EC) over UART.

Two layers (sensor-protocols §1):

- A pure parser. ``parse_line`` classifies one line as a ``StatusLine``
  (``*OK``, ``*ER``, ``*RS`` ...), a ``QueryReply`` (``?I,pH,2.16``,
  ``?,O,EC,TDS``, ``?*OK,1``) or a ``DataLine`` (``7.156``, ``412.0,1.025``,
  ``no output``), case-insensitively, and raises ProtocolError for anything
  else. ``parse_reading`` turns a data line into named values for a circuit
  and its enabled outputs; ``parse_identity`` and ``parse_outputs`` read the
  ``i`` and ``O,?`` replies.
- ``EzoSource``, a thin polling driver. It opens the port, discards stale
  continuous-mode lines, turns response codes on (``*OK,1``), stops continuous
  mode (``C,0``), checks the circuit's identity (``i``) and, for DO and EC,
  learns the enabled outputs (``O,?``). Then every ``interval_s``, on a fixed
  cadence, it sends ``R`` and reads until ``*OK`` or ``*ER``. A reading is
  acknowledged by awaiting ``Sink.submit`` (the log commit) before the next
  poll. Garbage, ``*ER`` and timeouts are reported with ``Sink.reject``;
  ``*RS``/``*RE`` (the circuit rebooted) re-run the start sequence; a broken
  link or too many timeouts in a row close the port, and it is reopened after
  a capped, jittered back-off.

``*OK,1`` is sent before ``C,0`` (the reference's vendor sample sends ``C,0``
first): with response codes off, ``C,0`` would get no ``*OK`` and the start
would time out. A sleeping circuit swallows the byte that wakes it and
answers ``*WA``; the ``*ER`` that the mangled command then earns is retried
once. Old firmware that knows only ``RESPONSE,1`` is tried after that.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from gateway.backoff import Backoff
from gateway.config import EzoSensorConfig
from gateway.errors import ProtocolError, SensorError, SensorTimeout
from gateway.sources.base import Reading, Sink, Value
from gateway.sources.serial_link import MAX_LINE_BYTES, SerialLink

__all__ = [
    "STATUS_CODES",
    "DataLine",
    "EzoLine",
    "EzoSource",
    "QueryReply",
    "StatusLine",
    "next_slot",
    "parse_identity",
    "parse_line",
    "parse_outputs",
    "parse_reading",
]

log = logging.getLogger(__name__)

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


# -- the driver -------------------------------------------------------------------------


class _IdentityMismatch(SensorError):
    """The port answers as another kind of circuit than configured."""


class _ErrorReply(ProtocolError):
    """A command was answered ``*ER``."""


class _Rebooted(Exception):
    """The circuit announced a reset (``*RS``/``*RE``) in the middle of a poll."""


class EzoSource:
    """Polls one EZO circuit; ``run`` reads until cancelled.

    Args:
        config: the sensor's configuration.
        clock: receive time source, ``time.time_ns`` by default.
        backoff: reconnect delays (default: 0.5 s doubling to 30 s, jittered).
        max_timeouts: consecutive poll timeouts that count as a broken link.
        identity_retry_s: wait before looking again at a port that answers as
            the wrong kind of circuit.
    """

    def __init__(
        self,
        config: EzoSensorConfig,
        *,
        clock: Callable[[], int] = time.time_ns,
        backoff: Backoff | None = None,
        max_timeouts: int = 3,
        identity_retry_s: float = 60.0,
    ) -> None:
        if max_timeouts < 1:
            raise ValueError("max_timeouts must be >= 1")
        self.config = config
        self.name = config.id
        self._clock = clock
        self._backoff = backoff if backoff is not None else Backoff()
        self._max_timeouts = max_timeouts
        self._identity_retry_s = identity_retry_s
        self._outputs: tuple[str, ...] = ()
        self._timeouts = 0
        self.identity: tuple[str, str] | None = None
        """(type, firmware) of the circuit last seen, e.g. ("PH", "2.16")."""

    async def run(self, sink: Sink) -> None:
        """Poll until cancelled; reopen the port after failures. Never raises for bad input."""
        cfg = self.config
        while True:
            try:
                async with SerialLink(cfg.port, cfg.baudrate, sensor=self.name) as link:
                    log.info("%s: opened %s at %d baud", self.name, cfg.port, cfg.baudrate)
                    await self._serve(link, sink)
            except _IdentityMismatch as exc:
                sink.reject(self.name, "identity-mismatch", exc.problem)
                delay = self._identity_retry_s
            except SensorError as exc:
                delay = self._backoff.next_delay()
                log.warning("%s: %s; reopening in %.2f s", self.name, exc.problem, delay)
            await asyncio.sleep(delay)

    async def _serve(self, link: SerialLink, sink: Sink) -> None:
        while True:
            await self._start(link, sink)
            try:
                await self._poll_loop(link, sink)
            except _Rebooted:
                log.warning("%s: circuit rebooted; running the start sequence again", self.name)

    async def _start(self, link: SerialLink, sink: Sink) -> None:
        self._timeouts = 0
        link.discard_input()
        await self._enable_response_codes(link, sink)
        await self._exchange(link, sink, "C,0")
        reply = await self._exchange(link, sink, "i", want="I")
        assert reply is not None
        kind, firmware = parse_identity(reply.text, sensor=self.name)
        self.identity = (kind, firmware)
        if kind.lower() != self.config.circuit:
            raise _IdentityMismatch(
                self.name,
                f"{self.config.port} answers as an EZO-{kind} (firmware {firmware}), but the "
                f"sensor is configured as circuit {self.config.circuit!r}; check the wiring "
                "or the config",
            )
        if self.config.circuit in _OUTPUTS:
            reply = await self._exchange(link, sink, "O,?", want="O")
            assert reply is not None
            self._outputs = parse_outputs(self.config.circuit, reply.text, sensor=self.name)
        log.info(
            "%s: EZO-%s firmware %s ready%s",
            self.name,
            kind,
            firmware,
            f", outputs {','.join(self._outputs) or 'none'}"
            if self.config.circuit in _OUTPUTS
            else "",
        )

    async def _enable_response_codes(self, link: SerialLink, sink: Sink) -> None:
        last: ProtocolError | None = None
        for command in ("*OK,1", "*OK,1", "RESPONSE,1"):
            try:
                await self._exchange(link, sink, command)
                return
            except _ErrorReply as exc:
                last = exc
        assert last is not None
        raise last

    async def _exchange(
        self, link: SerialLink, sink: Sink, command: str, *, want: str | None = None
    ) -> QueryReply | None:
        """Send a start-up command; read to its ``*OK``, keeping the ``?<want>`` reply."""
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
                sink.reject(self.name, "garbage", exc.problem)
                continue
            if isinstance(line, QueryReply) and line.key == want:
                found = line
            elif isinstance(line, StatusLine) and line.code == "*ER":
                raise _ErrorReply(self.name, f"{command!r} was answered *ER")
            elif isinstance(line, StatusLine) and line.code == "*OK":
                if want is not None and found is None:
                    raise ProtocolError(self.name, f"{command!r} was answered *OK without ?{want}")
                return found
            else:
                log.debug("%s: skipped %r while waiting for %r", self.name, line, command)

    async def _poll_loop(self, link: SerialLink, sink: Sink) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.interval_s
        slot = loop.time()
        while True:
            delay = slot - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._poll(link, sink)
            now = loop.time()
            upcoming = next_slot(slot, interval, now)
            if upcoming - slot > interval * 1.5:
                log.warning("%s: a poll overran its interval; skipped slot(s)", self.name)
            slot = upcoming

    async def _poll(self, link: SerialLink, sink: Sink) -> None:
        """One ``R``: submit the reading, or report why there is none."""
        link.discard_input()
        await link.write(b"R\r")
        loop = asyncio.get_running_loop()
        timeout = self.config.timeout_s
        deadline = loop.time() + timeout
        data: DataLine | None = None
        received_ns = 0
        while True:
            try:
                raw = await link.readline(deadline - loop.time())
                received = self._clock()
                line = parse_line(raw, sensor=self.name)
            except SensorTimeout:
                self._timeouts += 1
                sink.reject(
                    self.name,
                    "timeout",
                    f"no *OK within {timeout} s after R ({self._timeouts} in a row)",
                )
                if self._timeouts >= self._max_timeouts:
                    raise SensorError(
                        self.name, f"{self._timeouts} polls in a row timed out"
                    ) from None
                return
            except ProtocolError as exc:
                sink.reject(self.name, "garbage", exc.problem)
                continue
            if isinstance(line, DataLine):
                if data is not None:
                    log.debug("%s: dropping earlier line %r", self.name, data.text)
                data, received_ns = line, received
            elif isinstance(line, QueryReply):
                log.debug("%s: skipped unexpected %r", self.name, line.text)
            elif line.code in ("*RS", "*RE"):
                raise _Rebooted
            elif line.code in ("*OV", "*UV"):
                log.warning(
                    "%s: circuit reports %s (supply voltage out of range)", self.name, line.code
                )
            elif line.code == "*ER":
                self._timeouts = 0
                sink.reject(self.name, "error-reply", "R was answered *ER")
                return
            elif line.code == "*OK":
                self._timeouts = 0
                await self._submit(sink, data, received_ns)
                return
            # *SL, *WA, *DONE: unsolicited, nothing to do

    async def _submit(self, sink: Sink, data: DataLine | None, received_ns: int) -> None:
        if data is None:
            sink.reject(self.name, "no-reading", "R was answered *OK without a reading")
            return
        try:
            values = parse_reading(self.config.circuit, self._outputs, data.text, sensor=self.name)
        except ProtocolError as exc:
            sink.reject(self.name, "bad-reading", exc.problem)
            return
        if not values:
            sink.reject(self.name, "no-output", "every output of the circuit is off (O,?)")
            return
        await sink.submit(Reading(self.name, values, received_ns, raw=data.text))
        self._backoff.reset()
