"""The technician's tools for EZO circuits: ``probe_ezo`` and ``scan_ezo``."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.drivers.base import Exchange, Found, ProbeResult
from gateway.drivers.ezo.config import EZO_CIRCUITS, EZO_DEFAULTS, EZO_OUTPUTS, EzoSensorConfig
from gateway.drivers.ezo.protocol import (
    QueryReply,
    StatusLine,
    parse_identity,
    parse_line,
    parse_outputs,
)
from gateway.drivers.ezo.source import QUIET_S, EzoSource
from gateway.drivers.link.serial import SerialLink
from gateway.errors import ProtocolError, SensorError, SensorTimeout
from gateway.pipeline import Event, Gap, Reading

__all__ = ["SCAN_BAUD_RATES", "ezo_snippet", "probe_ezo", "scan_ezo"]

logger = logging.getLogger(__name__)
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
            await source.read_once(recorder, sink)
    except SensorError as exc:
        error = exc.problem
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
        f"interval_s = {EZO_DEFAULTS.interval_s}",
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
            await link.readline(min(QUIET_S, left))
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
