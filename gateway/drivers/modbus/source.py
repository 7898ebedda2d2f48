"""Modbus RTU sensors: every slave on one RS-485 bus read by one source, each by its profile.

``ModbusSource`` owns one bus (``ModbusLink``: one pymodbus client on one
port) and runs one named task per slave in a TaskGroup. Each slave keeps
its own fixed cadence (``interval_s``), timeout and retry budget. Slaves
take turns on the half-duplex bus in the order they ask for it: a turn is
one reading (every request of it, back to back), ended early by a failed
attempt, whose retry asks for a new turn. So a slave that stops answering
holds the bus for one timeout at a time, costs it at most
``timeout_s × (retries + 1)`` per its own interval, and delays any other
slave's reading by at most one of its timeouts.

A reading is: the profile's per-reading setup writes (if any), the reads
``plan_reads`` groups the profile's registers into, and ``decode_reading``.
Values are submitted as one ``Reading`` whose ``raw`` is the reply frames
in hex; what could not be read is reported with ``Sink.reject``:

    timeout                       no reply to any attempt of a request
    crc / garbage                 bytes that were no valid reply (each one counted)
    exception-<name>              an exception response, e.g. exception-illegal-address
    unavailable                   the device marked a value missing (sentinel, NaN, status)
    bad-value                     register words that cannot be the declared value
    late-reply                    a reply that came after its request timed out
    link-lost / port-unavailable  the port failed or could not be opened (once per outage)

Silence itself becomes a gap record in the central tracker (gateway.silence),
which names the last of these reasons. When the port fails (a USB adapter
unplugged), every slave task stops, the port is closed, and it is reopened
by path after a capped, jittered back-off, following a ``/dev/serial/by-id``
symlink to the new device; each slave's cadence carries on.

``probe_modbus`` (one reading with the frames on the wire) and
``scan_modbus`` (find slaves on a port within a time budget), in ``tools``, are
the technician's tools behind ``gateway probe`` and ``gateway scan``; ``SlaveReader`` is
their seam.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.backoff import Backoff
from gateway.drivers.link.cadence import advance
from gateway.drivers.link.record import Transcript
from gateway.drivers.modbus.config import ModbusSensorConfig, check_modbus_buses
from gateway.drivers.modbus.link import LinkLost, ModbusLink
from gateway.drivers.modbus.profile import (
    DecodedReading,
    ReadBlock,
    SetupWrite,
    decode_reading,
    plan_reads,
)
from gateway.drivers.modbus.rtu import ModbusBadCrc, ModbusExceptionReply, hex_frame, read_reply
from gateway.errors import ProtocolError, SensorError, SensorTimeout
from gateway.pipeline import Event, Reading, Sink, Value

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

__all__ = ["ModbusSource", "build_sources"]

logger = logging.getLogger(__name__)

Reject = Callable[[str, str, str], None]
"""``(sensor, reason, detail)``, as ``Sink.reject``."""


# -- one reading of one slave ----------------------------------------------------------


@dataclass(slots=True)
class _Outcome:
    """What one reading attempt produced."""

    decoded: DecodedReading | None = None
    frames: list[str] = field(default_factory=list)
    """Reply frames in hex, for ``Reading.raw``."""
    received_ns: int = 0
    error: str | None = None
    """Why there is no reading, for the probe."""


class SlaveReader:
    """Reads one slave by its profile over a shared link; never raises except LinkLost."""

    def __init__(
        self,
        cfg: ModbusSensorConfig,
        reject: Reject,
        clock: Callable[[], int],
        transcript: Transcript | None = None,
    ) -> None:
        self.cfg = cfg
        self.blocks = plan_reads(cfg.profile)
        self._reject = reject
        self._clock = clock
        self._transcript = transcript
        self.connected_setup_done = False

    async def read(self, link: ModbusLink) -> _Outcome:
        """One reading: setup writes, then every block, each one turn on the bus.

        The requests go out back to back within one turn (``link.turn``), so
        another slave's request never waits between two blocks of this reading.
        The turn ends early after a failed attempt (the retry queues behind
        the other slaves' turns) and after a setup write that asks for a wait
        (the wait is off the bus).
        """
        cfg, out = self.cfg, _Outcome()
        steps: list[SetupWrite | ReadBlock] = []
        if not self.connected_setup_done:
            steps += [w for w in cfg.profile.setup if w.when == "connect"]
        connect_left = len(steps)
        self.connected_setup_done = connect_left == 0
        steps += [w for w in cfg.profile.setup if w.when == "reading"]
        steps += self.blocks
        words: dict[ReadBlock, Sequence[int]] = {}
        attempts = cfg.retries + 1
        attempt = 1
        while steps:
            pause = 0.0
            async with link.turn():
                while steps:
                    step = steps[0]
                    got = await self._attempt(link, step, attempt, out)
                    if got is None:
                        return out  # an exception reply: rejected, not retried
                    if isinstance(got, SensorError):
                        if attempt == attempts:
                            self._give_up(step, got, out)
                            return out
                        attempt += 1
                        break  # the retry waits for its turn behind the other slaves
                    steps.pop(0)
                    attempt = 1
                    if isinstance(step, ReadBlock):
                        words[step] = got
                        out.frames.append(hex_frame(read_reply(cfg.slave, step.function, got)))
                        continue
                    if connect_left:
                        connect_left -= 1
                        self.connected_setup_done = connect_left == 0
                    if step.wait_s > 0:
                        pause = step.wait_s
                        break
            if pause:
                await asyncio.sleep(pause)  # off the bus: other slaves may use it meanwhile
        out.received_ns = self._clock()
        out.decoded = decoded = decode_reading(cfg.profile, words)
        for spec, why in decoded.errors:
            self._reject(cfg.id, "bad-value", f"{spec.quantity}: {why}")
        for spec, why in decoded.missing:
            self._reject(cfg.id, "unavailable", f"{spec.quantity}: device marks it missing ({why})")
        if not decoded.values:
            out.error = "no value could be read (see the rejections)"
        return out

    def _what(self, step: SetupWrite | ReadBlock) -> str:
        if isinstance(step, ReadBlock):
            return f"read FC{step.function} @{step.address} x{step.count}"
        return f"setup write FC{step.function} @{step.address}"

    async def _attempt(
        self, link: ModbusLink, step: SetupWrite | ReadBlock, attempt: int, out: _Outcome
    ) -> list[int] | SensorError | None:
        """One attempt at one request: the words (a write: its values), the error that
        may be retried (already noted), or None for an exception reply (rejected).

        Raises:
            LinkLost: the port failed.
        """
        cfg = self.cfg
        what = self._what(step)
        attempts = cfg.retries + 1
        try:
            if isinstance(step, ReadBlock):
                got = await link.read(
                    cfg.slave,
                    step.function,
                    step.address,
                    step.count,
                    timeout_s=cfg.timeout_s,
                    sensor=cfg.id,
                )
            else:
                await link.write(
                    cfg.slave,
                    step.function,
                    step.address,
                    step.values,
                    timeout_s=cfg.timeout_s,
                    sensor=cfg.id,
                )
                got = list(step.values)
        except LinkLost:
            raise
        except ModbusExceptionReply as exc:
            self._note(link, f"{what}: {exc.problem}")
            self._reject(cfg.id, exc.reason, f"{what}: {exc.problem}")
            out.error = f"slave {cfg.slave} answered {what} with {exc.problem}"
            return None
        except SensorTimeout as exc:
            self._note(link, f"{what}: no reply (attempt {attempt}/{attempts})")
            return exc
        except ProtocolError as exc:
            reason = "crc" if isinstance(exc, ModbusBadCrc) else "garbage"
            self._note(link, f"{what}: {exc.problem} (attempt {attempt}/{attempts})")
            self._reject(cfg.id, reason, f"{what}: {exc.problem}")
            return exc
        self._note(link, f"{what}: ok")
        return got

    def _give_up(self, step: SetupWrite | ReadBlock, last: SensorError, out: _Outcome) -> None:
        """Every attempt at ``step`` failed: no reading this time."""
        cfg = self.cfg
        what = self._what(step)
        if isinstance(last, SensorTimeout):
            self._reject(
                cfg.id,
                "timeout",
                f"no reply from slave {cfg.slave} on {cfg.port} to {what} "
                f"({cfg.retries + 1} attempt(s) of {cfg.timeout_s:g} s)",
            )
        out.error = f"{what}: {last.problem}"

    def _note(self, link: ModbusLink, note: str) -> None:
        if self._transcript is not None and link.last is not None:
            self._transcript.add(link.last.sent, link.last.received, note)


def reading_of(cfg: ModbusSensorConfig, out: _Outcome) -> Reading | None:
    if out.decoded is None or not out.decoded.values:
        return None
    values = tuple(Value(spec.quantity, value, spec.unit) for spec, value in out.decoded.values)
    return Reading(cfg.id, values, out.received_ns, raw="; ".join(out.frames))


# -- the bus source --------------------------------------------------------------------------


class ModbusSource:
    """Reads every Modbus sensor on one port; ``run`` reads until cancelled.

    Args:
        sensors: the slaves on this bus (same port and serial settings).
        clock: receive time source, ``time.time_ns`` by default.
        backoff: delays before reopening a failed port (default 0.5 s doubling to 30 s).

    Raises:
        ConfigError: the sensors do not share one port and its settings, or reuse a slave id.
    """

    def __init__(
        self,
        sensors: Sequence[ModbusSensorConfig],
        *,
        clock: Callable[[], int] = time.time_ns,
        backoff: Backoff | None = None,
    ) -> None:
        if not sensors:
            raise ValueError("a Modbus bus needs at least one sensor")
        buses = check_modbus_buses(sensors)
        if len(buses) != 1:
            raise ValueError(f"one ModbusSource per port, got {sorted(buses)}")
        self.sensors = tuple(sensors)
        first = sensors[0]
        self.port = first.port
        self.name = f"modbus[{first.port}]"
        self._clock = clock
        self._backoff = backoff if backoff is not None else Backoff()
        self._slots: dict[str, float] = {}
        self.opened = 0
        """How many times the port was opened (a replug shows as a second open)."""

    async def run(self, sink: Sink) -> None:
        """Read until cancelled; reopen the port after failures. Never raises for bad input."""
        first = self.sensors[0]
        down_reported = False
        while True:
            readers = [SlaveReader(cfg, sink.reject, self._clock) for cfg in self.sensors]
            try:
                async with ModbusLink(
                    self.port,
                    baudrate=first.baudrate,
                    parity=first.parity,
                    stopbits=first.stopbits,
                    name=self.name,
                    on_stray=lambda slave, frame: self._stray(sink, slave, frame),
                ) as link:
                    self.opened += 1
                    down_reported = False
                    async with asyncio.TaskGroup() as tg:
                        for reader in readers:
                            tg.create_task(
                                self._poll(link, reader, sink),
                                name=f"{self.name}.slave[{reader.cfg.slave}]",
                            )
                        tg.create_task(self._watch(link), name=f"{self.name}.watch")
            except* LinkLost as group:
                problem = "; ".join(
                    e.problem for e in group.exceptions if isinstance(e, SensorError)
                )
                reason = "link-lost" if self.opened else "port-unavailable"
                if not down_reported:
                    for cfg in self.sensors:
                        sink.reject(cfg.id, reason, f"{self.port}: {problem}")
                    down_reported = True
            delay = self._backoff.next_delay()
            logger.warning("%s: port down; reopening in %.2f s", self.name, delay)
            await asyncio.sleep(delay)

    def _stray(self, sink: Sink, slave: int, frame: bytes) -> None:
        cfg = next((c for c in self.sensors if c.slave == slave), None)
        if cfg is None:
            logger.warning(
                "%s: reply from unconfigured slave %d: %s", self.name, slave, hex_frame(frame)
            )
            return
        sink.reject(
            cfg.id,
            "late-reply",
            f"slave {slave} answered after its timeout of {cfg.timeout_s:g} s: {hex_frame(frame)}",
        )

    async def _watch(self, link: ModbusLink) -> None:
        why = await link.wait_lost()
        raise LinkLost(self.name, f"{self.port} {why}")

    async def _poll(self, link: ModbusLink, reader: SlaveReader, sink: Sink) -> None:
        cfg = reader.cfg
        loop = asyncio.get_running_loop()
        slot = max(self._slots.get(cfg.id, 0.0), loop.time())
        announced = False
        while True:
            self._slots[cfg.id] = slot
            delay = slot - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            out = await reader.read(link)
            reading = reading_of(cfg, out)
            if reading is not None:
                if not announced:
                    await sink.submit_event(_sensor_info(cfg, reading.received_ns))
                    announced = True
                await sink.submit(reading)
                self._backoff.reset()
            slot = advance(slot, cfg.interval_s, loop.time(), who=cfg.id, what="reading")


def _sensor_info(cfg: ModbusSensorConfig, time_ns: int) -> Event:
    """What is read, recorded once per connection: a profile change shows in the log."""
    return Event(
        "sensor-info",
        time_ns,
        {
            "sensor": cfg.id,
            "driver": "modbus",
            "port": cfg.port,
            "slave": cfg.slave,
            "profile": cfg.profile.name,
            "model": cfg.profile.model,
        },
    )


def build_sources(
    sensors: Sequence[ModbusSensorConfig], config: GatewayConfig, device_id: str
) -> list[ModbusSource]:
    """The driver row's ``build``: one client per bus, reading all its slaves."""
    return [ModbusSource(on_bus) for on_bus in check_modbus_buses(sensors).values()]
