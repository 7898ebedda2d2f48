"""SDI-12 sondes behind a USB SDI-12 adapter, spoken to through its ASCII interface.

The adapter interface is the one sensor-protocols §5 describes best, Dr. John
Liu's SDI-12 USB adapter (an FTDI virtual COM port, 9600 baud): the host
writes the bare SDI-12 command text (``0M!``, no terminator unless the
``terminator`` setting asks for one), the adapter sends the break and the
command on the bus at 1200 baud 7E1, and passes every line the sonde sends
back as an ASCII line ending in CR LF — the reply, and later the service
request. Silence from the adapter means silence on the bus. Adapters that
echo the command before the reply (``0M!00053``) are understood too. The
adapter itself answers at address ``z`` (``scan_sdi12`` leaves it out).

One ``Sdi12Source`` serves one adapter port and every configured address on
it. Each round it polls the sondes that are due, in turn: concurrent ones
(``C``/``CC``) are started first, sequential ones (``M``/``MC``) are measured
start to finish while those run (the spec forbids talking to another sonde
between an M and its data), then the concurrent ones are read as their
announced times come up. A sonde is identified with ``aI!`` before its first
measurement after the port opens and after it has stopped answering; each
identity goes to the log as a ``sensor-info`` event.

Retries (SDI-12 §7.2). The spec asks a recorder to re-send a command twice
without a break 16.67-87 ms after it, and then to repeat the whole break and
retries at least twice more, when a reply is missing or invalid (bad format,
wrong address, CRC error). Only the adapter controls the line, so the
no-break retries are its business; each command the host writes is one
break-and-command sequence, and this driver repeats it ``retries`` (default
2) more times after a timeout or an invalid reply, after letting any rest of
the bad reply arrive (``settle_s``). A ``aDn!`` is safe to repeat: the sonde
keeps its data until the next measurement. An aborted measurement or a
wrong number of values is not retried within the round.

A service request that comes after ttt (the sonde's fault) arrives just as
``aD0!`` goes out, on the line read for its reply. After an M whose service
request did not come, a bare ``a`` in reply to ``aD0!`` is taken for that
request and the next line for the reply; only if no line follows is the bare
``a`` the (empty) reply. So the round is kept and every D reply pairs with its
own command.

A sonde that never answers costs its own ``timeout_s * (retries + 1)`` per
round and nothing more. A round in which the adapter said nothing at all,
``max_silent_rounds`` times in a row, counts as a hung adapter: the port is
closed and reopened after a back-off, as after an unplug. Silence is not
turned into gap records here; ``gateway/silence.py`` does that from the
readings that stop arriving. Every refused reply goes to ``Sink.reject``
with one of the reasons in ``protocol`` or ``timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from gateway.backoff import Backoff
from gateway.drivers.link.cadence import next_slot
from gateway.drivers.link.display import escape
from gateway.drivers.link.drain import drain
from gateway.drivers.link.record import Transcript
from gateway.drivers.link.serial import SerialLink
from gateway.drivers.sdi12.config import Sdi12SensorConfig, check_sdi12_buses
from gateway.drivers.sdi12.protocol import (
    DataCollector,
    Identity,
    MeasureReply,
    MeasureRequest,
    Sdi12Rejection,
    identify,
    parse_acknowledge,
    parse_data,
    parse_identity,
    parse_measure_reply,
    send_data,
    strip_echo,
)
from gateway.errors import ProtocolError, SensorError, SensorTimeout
from gateway.pipeline import Event, Reading, Sink, Value
from gateway.silence import PORT_UNAVAILABLE

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

__all__ = ["SCAN_REPLY_TIMEOUT_S", "Sdi12Source", "build_sources"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
RejectFn = Callable[[str, str, str], None]

SETTLE_S = 0.05
"""Quiet time that ends a bad reply before the retry (spec: wait for the reply to complete)."""
SCAN_REPLY_TIMEOUT_S = 0.5
"""Per address during a scan: an adapter's break, wake-up and a 3-byte reply take ~0.1 s."""
_SETTLE_MAX_S = 1.0  # a babbling adapter does not hold a retry back longer than this


class CommandFailed(SensorError):
    """A sonde gave no valid reply to a command in all its attempts (already rejected)."""

    def __init__(self, sensor: str, problem: str, *, silent: bool) -> None:
        super().__init__(sensor, problem)
        self.silent = silent
        """True when no attempt got any reply at all (the sonde is gone)."""


class _MeasurementFailed(SensorError):
    """A measurement could not be completed this round (already rejected)."""


class Adapter:
    """One open adapter port: write a command, read reply lines."""

    def __init__(
        self,
        link: SerialLink,
        *,
        terminator: bytes,
        settle_s: float = SETTLE_S,
        transcript: Transcript | None = None,
    ) -> None:
        self._link = link
        self._terminator = terminator
        self._settle_s = settle_s
        self.transcript = transcript
        self.heard = False
        """Set whenever any line arrives; the source clears it each round."""

    async def ask(self, command: str, timeout_s: float, *, service_request_owed: str = "") -> bytes:
        """Send ``command`` (after dropping stale input) and return the reply line, echo removed.

        ``service_request_owed``: the address of a sonde whose service request
        has not come (after an M, by ttt). A bare address line is then that
        request, sent late (the sonde's fault), and the reply is the next line;
        it was the (empty) reply only if no other line follows within ``timeout_s``.

        Raises:
            SensorTimeout: no line within ``timeout_s``.
            ProtocolError: an overlong line (noise) came instead.
            SensorError: the port failed.
        """
        raw = command.encode("ascii")
        self._link.discard_input()
        await self._link.write(raw + self._terminator)
        line = await self._reply(command, timeout_s)
        line = strip_echo(line, raw)
        if service_request_owed and line == service_request_owed.encode("ascii"):
            try:
                after = await self._link.readline(timeout_s)
            except SensorTimeout:
                pass  # nothing followed: the bare address was the reply
            except ProtocolError as exc:
                self._record(command, escape(line), "late service request")
                self._record("", "", exc.problem)
                raise
            else:
                self._record(command, escape(line), "late service request; the reply follows")
                logger.debug("%s: late service request %r before the reply", command, line)
                line = strip_echo(after, raw)
                self._record("", escape(line))
                return line
        self._record(command, escape(line))
        return line

    async def _reply(self, command: str, timeout_s: float) -> bytes:
        try:
            line = await self._link.readline(timeout_s)
        except SensorTimeout:
            self._record(command, "", "no reply")
            raise
        except ProtocolError as exc:
            self.heard = True
            self._record(command, "", exc.problem)
            raise
        self.heard = True
        return line

    async def listen(self, timeout_s: float) -> bytes:
        """The next unsolicited line (a service request), without sending anything."""
        line = await self._link.readline(timeout_s)
        self.heard = True
        self._record("", escape(line))
        return line

    async def settle(self) -> None:
        """Let the rest of a bad reply arrive and drop it, so the retry's reply is its own."""

        def dropped(line: bytes) -> None:
            self._record("", escape(line), "late line, dropped")

        await drain(self._link, quiet_s=self._settle_s, within_s=_SETTLE_MAX_S, dropped=dropped)

    def _record(self, sent: str, received: str, note: str = "") -> None:
        if self.transcript is not None:
            self.transcript.add(sent, received, note)


class Session:
    """Commands to the sondes behind one adapter, with the spec's retries."""

    def __init__(
        self, adapter: Adapter, reject: RejectFn, clock: Callable[[], int] = time.time_ns
    ) -> None:
        self.adapter = adapter
        self._reject = reject
        self._clock = clock

    async def command(
        self,
        cfg: Sdi12SensorConfig,
        command: str,
        parse: Callable[[bytes], T],
        *,
        service_request_owed: bool = False,
    ) -> T:
        """Send ``command`` until ``parse`` accepts a reply, at most ``retries + 1`` times.

        ``service_request_owed``: the sonde's service request is late; see ``Adapter.ask``.
        """
        attempts = cfg.retries + 1
        replies = 0
        owed = cfg.address if service_request_owed else ""
        for attempt in range(1, attempts + 1):
            try:
                line = await self.adapter.ask(command, cfg.timeout_s, service_request_owed=owed)
            except SensorTimeout:
                continue
            except ProtocolError as exc:
                replies += 1
                self._reject(cfg.id, "malformed", f"{command} (attempt {attempt}): {exc.problem}")
                await self.adapter.settle()
                continue
            replies += 1
            try:
                return parse(line)
            except Sdi12Rejection as exc:
                self._reject(cfg.id, exc.reason, f"{command} (attempt {attempt}): {exc.problem}")
                await self.adapter.settle()
        if replies == 0:
            self._reject(
                cfg.id,
                "timeout",
                f"no reply from address {cfg.address!r} to {command} in {attempts} attempt(s) "
                f"of {cfg.timeout_s:g} s",
            )
        raise CommandFailed(
            cfg.id, f"no valid reply to {command} in {attempts} attempt(s)", silent=replies == 0
        )

    async def identify(self, cfg: Sdi12SensorConfig) -> Identity:
        return await self.command(
            cfg,
            identify(cfg.address),
            lambda line: parse_identity(line, cfg.address, sensor=cfg.id),
        )

    async def start(self, cfg: Sdi12SensorConfig, request: MeasureRequest) -> MeasureReply:
        """Send the measurement command; the reply must announce the configured value count."""
        reply = await self.command(
            cfg,
            request.command(cfg.address),
            lambda line: parse_measure_reply(line, cfg.address, request, sensor=cfg.id),
        )
        if reply.count != len(cfg.quantities):
            self._reject(
                cfg.id,
                "count-mismatch",
                f"{request.command(cfg.address)} announced {reply.count} values; the config "
                f"names {len(cfg.quantities)} quantities",
            )
            raise _MeasurementFailed(cfg.id, "value count differs from the config")
        return reply

    async def await_service_request(self, cfg: Sdi12SensorConfig, reply: MeasureReply) -> bool:
        """After M: wait for ``a`` CR LF, or the announced time, whichever comes first.

        True when the service request came; False when ttt ran out without it.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + reply.ready_s
        while True:
            try:
                line = await self.adapter.listen(deadline - loop.time())
            except SensorTimeout:
                logger.debug("%s: no service request within %d s", cfg.id, reply.ready_s)
                return False
            except ProtocolError as exc:
                self._reject(cfg.id, "malformed", f"waiting for the service request: {exc.problem}")
                continue
            try:
                parse_acknowledge(line, cfg.address, sensor=cfg.id)
                return True
            except Sdi12Rejection as exc:
                self._reject(cfg.id, exc.reason, f"waiting for the service request: {exc.problem}")

    async def collect(
        self,
        cfg: Sdi12SensorConfig,
        request: MeasureRequest,
        reply: MeasureReply,
        *,
        service_request_owed: bool = False,
    ) -> Reading:
        """``aD0!``, ``aD1!``, … until all values are in; a Reading named per the config.

        ``service_request_owed``: an M measurement's service request did not come
        by ttt. Sent late, it arrives as ``aD0!`` goes out, ahead of the reply:
        ``aD0!`` recognises it (``Adapter.ask``) instead of taking it for an
        empty reply, so the round and the pairing of replies are kept.
        """
        collector = DataCollector(reply.count)
        lines: list[str] = []
        done = False
        while not done:
            index = collector.next_command
            captured: list[bytes] = []

            def parse(line: bytes, captured: list[bytes] = captured) -> tuple[float, ...]:
                values = parse_data(
                    line,
                    cfg.address,
                    crc=request.crc,
                    max_values_chars=request.max_values_chars,
                    sensor=cfg.id,
                )
                captured.append(line)
                return values

            values = await self.command(
                cfg,
                send_data(cfg.address, index),
                parse,
                service_request_owed=service_request_owed and index == 0,
            )
            lines.append(escape(captured[-1]))
            try:
                done = collector.add(values, sensor=cfg.id)
            except Sdi12Rejection as exc:
                self._reject(cfg.id, exc.reason, exc.problem)
                raise _MeasurementFailed(cfg.id, exc.problem) from None
        named = tuple(
            Value(quantity, value, unit)
            for (quantity, unit), value in zip(cfg.quantities, collector.values, strict=True)
        )
        return Reading(cfg.id, named, self._clock(), raw="\n".join(lines))

    async def measure(self, cfg: Sdi12SensorConfig, request: MeasureRequest) -> Reading:
        """One measurement start to finish (M: service request; C: the full announced time)."""
        reply = await self.start(cfg, request)
        owed = False
        if reply.ready_s:
            if request.concurrent:
                await asyncio.sleep(reply.ready_s)
            else:
                owed = not await self.await_service_request(cfg, reply)
        return await self.collect(cfg, request, reply, service_request_owed=owed)


@dataclass
class _Sonde:
    cfg: Sdi12SensorConfig
    request: MeasureRequest
    identity: Identity | None = None
    next_due: float = 0.0


def _identity_detail(cfg: Sdi12SensorConfig, identity: Identity) -> dict[str, str]:
    return {
        "sensor": cfg.id,
        "driver": "sdi12",
        "port": cfg.port,
        "address": identity.address,
        "sdi12_version": identity.sdi12_version,
        "vendor": identity.vendor,
        "model": identity.model,
        "version": identity.version,
        "serial": identity.serial,
        "raw": identity.raw,
    }


class Sdi12Source:
    """Polls every configured sonde on one SDI-12 adapter; ``run`` reads until cancelled.

    Args:
        sensors: the sondes on this adapter (same ``port``, distinct addresses).
        clock: receive time source, ``time.time_ns`` by default.
        backoff: reopen delays (default: 0.5 s doubling to 30 s, jittered).
        max_silent_rounds: rounds in a row without a single line from the
            adapter before the port is reopened.
        settle_s: quiet time that ends a bad reply before its retry.
    """

    def __init__(
        self,
        sensors: Sequence[Sdi12SensorConfig],
        *,
        clock: Callable[[], int] = time.time_ns,
        backoff: Backoff | None = None,
        max_silent_rounds: int = 3,
        settle_s: float = SETTLE_S,
    ) -> None:
        buses = check_sdi12_buses(sensors)
        if len(buses) != 1:
            raise ValueError(f"one Sdi12Source serves one adapter port, got {sorted(buses)}")
        if max_silent_rounds < 1:
            raise ValueError("max_silent_rounds must be >= 1")
        self.sensors = tuple(sensors)
        self.port = self.sensors[0].port
        self.name = f"sdi12[{self.port}]"
        self._clock = clock
        self._backoff = backoff if backoff is not None else Backoff()
        self._max_silent_rounds = max_silent_rounds
        self._settle_s = settle_s
        self.identities: dict[str, Identity] = {}
        """The last identity each sensor (by id) gave."""

    async def run(self, sink: Sink) -> None:
        """Poll until cancelled; reopen the port after failures. Never raises for bad input."""
        first = self.sensors[0]
        ever_opened = told_unavailable = False
        while True:
            opened = False
            try:
                async with SerialLink(self.port, first.baudrate, sensor=self.name) as link:
                    opened = ever_opened = True
                    logger.info("%s: opened at %d baud", self.name, first.baudrate)
                    if first.open_delay_s:
                        await asyncio.sleep(first.open_delay_s)
                    adapter = Adapter(
                        link, terminator=first.terminator_bytes, settle_s=self._settle_s
                    )
                    await self._serve(Session(adapter, sink.reject, self._clock), sink)
            except SensorError as exc:
                delay = self._backoff.next_delay()
                if opened:
                    for cfg in self.sensors:
                        sink.reject(cfg.id, "disconnected", f"{self.port}: {exc.problem}")
                elif not ever_opened and not told_unavailable:
                    # Never open since the start: the gaps say why, once.
                    for cfg in self.sensors:
                        sink.reject(cfg.id, PORT_UNAVAILABLE, f"{self.port}: {exc.problem}")
                    told_unavailable = True
                logger.warning("%s: %s; reopening in %.2f s", self.name, exc.problem, delay)
            await asyncio.sleep(delay)

    async def _serve(self, session: Session, sink: Sink) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        sondes = [
            _Sonde(cfg, MeasureRequest.parse(cfg.command), None, start) for cfg in self.sensors
        ]
        silent_rounds = 0
        while True:
            wait = min(s.next_due for s in sondes) - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            now = loop.time()
            due = [s for s in sondes if s.next_due <= now]
            session.adapter.heard = False
            await self._round(session, due, sink)
            after = loop.time()
            for s in due:
                s.next_due = next_slot(s.next_due, s.cfg.interval_s, after)
            silent_rounds = 0 if session.adapter.heard else silent_rounds + 1
            if silent_rounds >= self._max_silent_rounds:
                raise SensorError(
                    self.name, f"the adapter answered nothing in {silent_rounds} rounds"
                )

    async def _round(self, session: Session, due: list[_Sonde], sink: Sink) -> None:
        loop = asyncio.get_running_loop()
        running: list[tuple[float, int, _Sonde, MeasureReply]] = []
        sequential: list[_Sonde] = []
        for order, sonde in enumerate(due):
            if sonde.identity is None and not await self._identify(session, sonde, sink):
                continue
            if not sonde.request.concurrent:
                sequential.append(sonde)
                continue
            try:
                reply = await session.start(sonde.cfg, sonde.request)
            except SensorError as exc:
                self._lost(sonde, exc)
                continue
            running.append((loop.time() + reply.ready_s, order, sonde, reply))
        for sonde in sequential:
            try:
                reading = await session.measure(sonde.cfg, sonde.request)
            except SensorError as exc:
                self._lost(sonde, exc)
                continue
            await self._submit(sink, reading)
        for ready_at, _, sonde, reply in sorted(running, key=lambda r: (r[0], r[1])):
            wait = ready_at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                reading = await session.collect(sonde.cfg, sonde.request, reply)
            except SensorError as exc:
                self._lost(sonde, exc)
                continue
            await self._submit(sink, reading)

    async def _identify(self, session: Session, sonde: _Sonde, sink: Sink) -> bool:
        try:
            identity = await session.identify(sonde.cfg)
        except CommandFailed:
            return False
        sonde.identity = identity
        self.identities[sonde.cfg.id] = identity
        logger.info(
            "%s: address %s is %s %s v%s (SDI-12 %s) serial %r",
            sonde.cfg.id,
            identity.address,
            identity.vendor,
            identity.model,
            identity.version,
            identity.sdi12_version,
            identity.serial,
        )
        detail = _identity_detail(sonde.cfg, identity)
        await sink.submit_event(Event("sensor-info", self._clock(), detail))
        return True

    def _lost(self, sonde: _Sonde, exc: SensorError) -> None:
        if isinstance(exc, CommandFailed) and exc.silent:
            sonde.identity = None  # it went away: identify it again when it answers
        elif not isinstance(exc, CommandFailed | _MeasurementFailed):
            raise exc  # the port failed: let run() reopen it
        logger.debug("%s: no reading this round: %s", sonde.cfg.id, exc.problem)

    async def _submit(self, sink: Sink, reading: Reading) -> None:
        await sink.submit(reading)
        self._backoff.reset()


def build_sources(
    sensors: Sequence[Sdi12SensorConfig], config: GatewayConfig, device_id: str
) -> list[Sdi12Source]:
    """The driver row's ``build``: one source per adapter port, serving every address on it."""
    return [Sdi12Source(on_port) for on_port in check_sdi12_buses(sensors).values()]
