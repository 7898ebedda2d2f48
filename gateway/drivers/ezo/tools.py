"""The technician's tools for EZO circuits.

``probe_ezo`` takes one reading through the driver's own start sequence
(``EzoSource.read_once``) over a recording link, keeping every raw exchange;
``scan_ezo`` finds a circuit on a port across baud rates and prints its
``[[sensor]]`` snippet (``ezo_snippet``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gateway.drivers.base import Found, ProbeResult
from gateway.drivers.ezo.config import EZO_CIRCUITS, EZO_DEFAULTS, EZO_OUTPUTS, EzoSensorConfig
from gateway.drivers.ezo.protocol import (
    QueryReply,
    StatusLine,
    parse_identity,
    parse_line,
    parse_outputs,
)
from gateway.drivers.ezo.source import QUIET_S, EzoSource
from gateway.drivers.link.drain import drain
from gateway.drivers.link.record import RecordingLink
from gateway.drivers.link.serial import SerialLink
from gateway.drivers.link.snippet import TomlValue, sensor_snippet
from gateway.errors import ProtocolError, SensorError, SensorTimeout
from gateway.pipeline import Event, Gap, Reading

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

__all__ = ["SCAN_BAUD_RATES", "ezo_snippet", "probe", "probe_ezo", "scan", "scan_ezo"]

logger = logging.getLogger(__name__)


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
    recorder: RecordingLink | None = None
    error: str | None = None
    try:
        async with SerialLink(cfg.port, cfg.baudrate, sensor=cfg.id) as link:
            recorder = RecordingLink(link)
            await source.read_once(recorder, sink)
    except SensorError as exc:
        error = exc.problem
    reading = sink.readings[0] if sink.readings else None
    if reading is None and error is None:
        error = "; ".join(sink.rejects) or "no reading"
    exchanges = recorder.transcript.exchanges if recorder is not None else ()
    return ProbeResult(cfg.id, exchanges, reading, error)


SCAN_BAUD_RATES = (9600, 115200, 38400, 19200, 57600, 2400, 1200, 300)
"""The order ``scan_ezo`` tries: the factory rate first, then the common fast ones."""

_SCAN_TRY_S = 1.0  # per baud rate and step: `i` takes 300 ms, plus the bytes at 300 baud


def ezo_snippet(
    port: str, circuit: str, baudrate: int, outputs: Sequence[str] | None = None
) -> str:
    """A complete ``[[sensor]]`` table for a found circuit."""
    fields: list[tuple[str, TomlValue]] = [
        ("id", f"{circuit}-1"),
        ("driver", "ezo"),
        ("circuit", circuit),
        ("port", port),
        ("baudrate", baudrate),
        ("interval_s", EZO_DEFAULTS.interval_s),
    ]
    if outputs is not None:
        fields.append(("outputs", list(outputs)))
    return sensor_snippet(*fields)


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


async def _scan_at(port: str, baudrate: int, within_s: float) -> Found | None:
    async with SerialLink(port, baudrate, sensor="scan") as link:
        link.discard_input()
        # A lone CR ends whatever junk an earlier attempt left in the circuit's
        # buffer (and wakes a sleeping one), so `i` arrives on a clean line.
        await link.write(b"\r")
        # Its *ER, if it had junk, must not answer our `i`.
        await drain(link, quiet_s=QUIET_S, within_s=within_s)
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


async def scan_ezo(port: str, budget_s: float) -> list[Found]:
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


async def probe(sensor: EzoSensorConfig, config: GatewayConfig) -> ProbeResult:
    """The driver row's ``probe``: ``probe_ezo``."""
    return await probe_ezo(sensor)


scan = scan_ezo
"""The driver row's ``scan``."""
