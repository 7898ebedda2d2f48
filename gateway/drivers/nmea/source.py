"""``NmeaSource``: listens to one port's NMEA 0183 talker for all the sensors on it.

A talker sends on its own schedule (commonly every 1-2 s) and takes no
commands, so nothing is written to the port. Each sensor keeps a fixed cadence
(``link.cadence``): the first good sentence of its type at or after its slot is
submitted as a ``Reading`` (``raw`` is the whole sentence) and the slot moves
on by ``interval_s``; the talker's sentences in between are not readings. No
good sentence within ``timeout_s`` of the slot is a ``timeout`` reject, and
the slot moves on too.

Every line is checked (``protocol.parse_sentence``): a refused one is reported
with ``Sink.reject`` under its reason (``garbage``, ``no-checksum``,
``bad-checksum``, ``bad-field``, ``no-value``; ``too-long`` for a line over 80
bytes) against the sensor whose sentence it names, else every sensor on the
port. Valid sentences of other formatters or talkers are skipped. A broken
link (an unplugged adapter, a closed pty) closes the port; it is reopened,
following the ``/dev/serial/by-id`` symlink anew, after a capped, jittered
back-off. Each outage is reported once to every sensor on the port, as the
EZO source does: ``link-lost`` once the port has been open, else
``port-unavailable`` (``gateway.silence``), so status and the gap records
name the cause.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from gateway.backoff import Backoff
from gateway.drivers.link.cadence import advance, next_slot
from gateway.drivers.link.serial import SerialLink
from gateway.drivers.nmea.config import NmeaSensorConfig, check_nmea_ports
from gateway.drivers.nmea.protocol import (
    MAX_SENTENCE_BYTES,
    Bad,
    Sentence,
    parse_sentence,
    value_of,
)
from gateway.errors import ProtocolError, SensorError, SensorTimeout
from gateway.pipeline import Reading, Sink, Value
from gateway.silence import LINK_LOST, PORT_UNAVAILABLE

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

__all__ = ["NmeaSource", "build_sources", "hear", "open_port"]

logger = logging.getLogger(__name__)


def open_port(sensor: NmeaSensorConfig, name: str) -> SerialLink:
    """The port ``sensor`` is on, read as sentences no longer than NMEA allows."""
    return SerialLink(sensor.port, sensor.baudrate, sensor=name, max_line=MAX_SENTENCE_BYTES)


def hear(
    line: bytes, sensors: Mapping[str, NmeaSensorConfig]
) -> tuple[NmeaSensorConfig | None, Value | Bad | None, str]:
    """What one line means to the sensors on its port (by sentence type).

    Returns ``(sensor, outcome, text)``: the sensor the line is for (None when
    it names none of them), a ``Value`` for it, a ``Bad`` (refused; for the
    sensor, or for the port when ``sensor`` is None), or None (a valid sentence
    no sensor reads); ``text`` is the line as received.
    """
    got = parse_sentence(line)
    text = line.decode("latin-1")
    if isinstance(got, Bad):
        claimed = sensors.get(text[3:6]) if text.startswith("$") else None
        return claimed, got, text
    sensor = sensors.get(got.formatter)
    if sensor is None or not _from_talker(sensor, got):
        return None, None, text
    return sensor, value_of(got), text


def _from_talker(sensor: NmeaSensorConfig, sentence: Sentence) -> bool:
    return sensor.talker is None or sensor.talker == sentence.talker


class NmeaSource:
    """Reads every NMEA sensor on one port; ``run`` reads until cancelled.

    Args:
        sensors: the port's sensors (``check_nmea_ports`` grouped them).
        clock: receive time source, ``time.time_ns`` by default.
        backoff: reopen delays (default: 0.5 s doubling to 30 s, jittered).
    """

    def __init__(
        self,
        sensors: Sequence[NmeaSensorConfig],
        *,
        clock: Callable[[], int] = time.time_ns,
        backoff: Backoff | None = None,
    ) -> None:
        if not sensors:
            raise ValueError("an NmeaSource needs at least one sensor")
        self.sensors: dict[str, NmeaSensorConfig] = {s.sentence: s for s in sensors}
        self.port = sensors[0].port
        self.name = f"nmea[{self.port}]"
        self._clock = clock
        self._backoff = backoff if backoff is not None else Backoff()

    async def run(self, sink: Sink) -> None:
        """Read until cancelled; reopen the port after failures. Never raises for bad input."""
        first = next(iter(self.sensors.values()))
        opened = down = False
        while True:
            try:
                async with open_port(first, self.name) as link:
                    opened, down = True, False
                    logger.info("%s: opened at %d baud", self.name, first.baudrate)
                    await self._listen(link, sink)
            except SensorError as exc:
                delay = self._backoff.next_delay()
                logger.warning("%s: %s; reopening in %.2f s", self.name, exc.problem, delay)
                if not down:  # once per outage; its timeouts were reported one by one
                    down = True
                    for s in self.sensors.values():
                        reason = LINK_LOST if opened else PORT_UNAVAILABLE
                        sink.reject(s.id, reason, f"{self.port}: {exc.problem}")
                await asyncio.sleep(delay)

    async def _listen(self, link: SerialLink, sink: Sink) -> None:
        loop = asyncio.get_running_loop()
        slots: dict[str, float] = dict.fromkeys(
            self.sensors, loop.time()
        )  # the first reading: the next sentence
        while True:
            wait = min(slots[k] + s.timeout_s for k, s in self.sensors.items()) - loop.time()
            try:
                line = await link.readline(max(0.0, wait))
            except SensorTimeout:
                self._time_out(sink, slots, loop.time())
                continue
            except ProtocolError as exc:
                for s in self.sensors.values():
                    sink.reject(s.id, "too-long", exc.problem)
                continue
            received = self._clock()
            sensor, outcome, text = hear(line, self.sensors)
            if isinstance(outcome, Bad):
                for s in [sensor] if sensor is not None else self.sensors.values():
                    sink.reject(s.id, outcome.reason, outcome.detail)
            elif isinstance(outcome, Value) and sensor is not None:
                now = loop.time()
                if now >= slots[sensor.sentence]:
                    await sink.submit(Reading(sensor.id, (outcome,), received, raw=text))
                    self._backoff.reset()
                    slot = slots[sensor.sentence]
                    slots[sensor.sentence] = advance(
                        slot, sensor.interval_s, loop.time(), who=sensor.id, what="reading"
                    )
            self._time_out(sink, slots, loop.time())

    def _time_out(self, sink: Sink, slots: dict[str, float], now: float) -> None:
        for key, s in self.sensors.items():
            if now >= slots[key] + s.timeout_s:
                sink.reject(
                    s.id, "timeout", f"no {s.sentence} sentence within {s.timeout_s} s of its slot"
                )
                slots[key] = next_slot(slots[key], s.interval_s, now)


def build_sources(
    sensors: Sequence[NmeaSensorConfig], config: GatewayConfig, device_id: str
) -> list[NmeaSource]:
    """The driver row's ``build``: one source per port, for every sensor on it."""
    return [NmeaSource(on_port) for on_port in check_nmea_ports(sensors).values()]
