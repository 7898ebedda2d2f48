"""The technician's tools for NMEA 0183 talkers: ``probe_nmea`` and ``scan_nmea``.

Both only listen: a talker takes no commands, so nothing is ever written to
the port. ``probe_nmea`` shows every line heard until the sensor's sentence
came (or ``timeout_s`` passed), each with what the driver made of it.
``scan_nmea`` listens at NMEA 0183's 4800 baud, then at NMEA 0183-HS's 38400,
and offers a ``[[sensor]]`` table for each sentence type it reads.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from gateway.drivers.base import Found, ProbeResult
from gateway.drivers.link.display import escape
from gateway.drivers.link.record import Transcript
from gateway.drivers.link.snippet import sensor_snippet
from gateway.drivers.nmea.config import NMEA_DEFAULTS, NMEA_SENTENCES, NmeaSensorConfig
from gateway.drivers.nmea.protocol import QUANTITIES, Bad, Sentence, parse_sentence
from gateway.drivers.nmea.source import hear, open_port
from gateway.errors import ProtocolError, SensorError, SensorTimeout
from gateway.pipeline import Reading, Value

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

__all__ = ["SCAN_BAUD_RATES", "probe", "probe_nmea", "scan", "scan_nmea"]

SCAN_BAUD_RATES = (4800, 38400)
"""NMEA 0183, then NMEA 0183-HS."""

_SCAN_MORE_S = 2.5  # after the first good sentence: time for the talker's other types


async def probe_nmea(cfg: NmeaSensorConfig) -> ProbeResult:
    """One reading of a configured sensor, with every line heard before it.

    Never raises for a sensor problem: the result's ``error`` says what went wrong.
    """
    transcript = Transcript()
    reading: Reading | None = None
    error: str | None = None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cfg.timeout_s
    try:
        async with open_port(cfg, cfg.id) as link:
            while reading is None:
                try:
                    line = await link.readline(deadline - loop.time())
                except ProtocolError as exc:
                    transcript.add("", "", f"too-long: {exc.problem}")
                    continue
                sensor, outcome, text = hear(line, {cfg.sentence: cfg})
                note = f"{outcome.reason}: {outcome.detail}" if isinstance(outcome, Bad) else ""
                transcript.add("", escape(line) + "\\r\\n", note)
                if isinstance(outcome, Value) and sensor is not None:
                    reading = Reading(cfg.id, (outcome,), time.time_ns(), raw=text)
    except SensorTimeout:
        error = f"no {cfg.sentence} sentence within {cfg.timeout_s} s"
    except SensorError as exc:
        error = exc.problem
    return ProbeResult(cfg.id, transcript.exchanges, reading, error)


async def scan_nmea(port: str, budget_s: float) -> list[Found]:
    """Listen for NMEA 0183 talkers on ``port`` within ``budget_s``, at each of
    ``SCAN_BAUD_RATES`` in turn; one ``Found`` per sentence type the driver reads.

    Raises:
        SensorError: the port cannot be opened.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_s
    for i, baudrate in enumerate(SCAN_BAUD_RATES):
        share = (deadline - loop.time()) / (len(SCAN_BAUD_RATES) - i)
        heard = await _listen(port, baudrate, share)
        if heard:
            return [_found(port, baudrate, s) for s in heard]
    return []


async def _listen(port: str, baudrate: int, within_s: float) -> list[Sentence]:
    """The first good sentence of each type the driver reads, heard within ``within_s``."""
    loop = asyncio.get_running_loop()
    until = loop.time() + within_s
    heard: dict[str, Sentence] = {}
    probe = NmeaSensorConfig(
        id="scan", port=port, sentence=NMEA_DEFAULTS.sentence, baudrate=baudrate
    )
    async with open_port(probe, f"scan {port}") as link:
        link.discard_input()
        good = False
        while (left := until - loop.time()) > 0:
            try:
                got = parse_sentence(await link.readline(left))
            except (SensorTimeout, ProtocolError):
                continue
            if isinstance(got, Bad):
                continue
            if not good:  # a talker at this rate: listen a little longer for its other types
                good = True
                until = min(until, loop.time() + _SCAN_MORE_S)
            if got.formatter in QUANTITIES and got.formatter not in heard:
                heard[got.formatter] = got
                if len(heard) == len(QUANTITIES):
                    break  # every type the driver reads
    return [heard[f] for f in NMEA_SENTENCES if f in heard]


def _found(port: str, baudrate: int, sentence: Sentence) -> Found:
    quantity, unit = QUANTITIES[sentence.formatter]
    d = NMEA_DEFAULTS
    name = f"{sentence.talker}{sentence.formatter}"
    return Found(
        port=port,
        driver="nmea",
        description=f"NMEA 0183 talker sending ${name} ({quantity}, {unit}) at {baudrate} baud",
        snippet=sensor_snippet(
            ("id", f"{quantity}-1"),
            ("driver", "nmea"),
            ("port", port),
            ("sentence", sentence.formatter),
            ("talker", sentence.talker),
            ("baudrate", baudrate),
            ("interval_s", d.interval_s),
            ("timeout_s", d.timeout_s),
        ),
    )


async def probe(sensor: NmeaSensorConfig, config: GatewayConfig) -> ProbeResult:
    """The driver row's ``probe``: ``probe_nmea``."""
    return await probe_nmea(sensor)


scan = scan_nmea
"""The driver row's ``scan``."""
