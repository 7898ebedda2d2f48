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
with one of the reasons in ``sdi12_protocol`` or ``timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from gateway.backoff import Backoff
from gateway.config.sdi12 import Sdi12SensorConfig, check_sdi12_buses
from gateway.errors import ProtocolError, SensorError, SensorTimeout
from gateway.pipeline import Event, Reading, Sink, Value
from gateway.sources.base import Exchange, Found, ProbeResult
from gateway.sources.sdi12_protocol import (
    ADDRESSES,
    CountMismatch,
    DataCollector,
    Identity,
    MeasureReply,
    MeasureRequest,
    ParameterInfo,
    Sdi12Rejection,
    acknowledge,
    address_query,
    escape,
    identify,
    identify_measurement,
    identify_parameter,
    parse_acknowledge,
    parse_address,
    parse_data,
    parse_identity,
    parse_measure_reply,
    parse_parameter_info,
    send_data,
    strip_echo,
)
from gateway.sources.serial_link import SerialLink

__all__ = ["SCAN_REPLY_TIMEOUT_S", "Sdi12Source", "probe_sdi12", "scan_sdi12"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
RejectFn = Callable[[str, str, str], None]

SETTLE_S = 0.05
"""Quiet time that ends a bad reply before the retry (spec: wait for the reply to complete)."""
SCAN_REPLY_TIMEOUT_S = 0.5
"""Per address during a scan: an adapter's break, wake-up and a 3-byte reply take ~0.1 s."""
_SETTLE_MAX_S = 1.0  # a babbling adapter does not hold a retry back longer than this


class _CommandFailed(SensorError):
    """A sonde gave no valid reply to a command in all its attempts (already rejected)."""

    def __init__(self, sensor: str, problem: str, *, silent: bool) -> None:
        super().__init__(sensor, problem)
        self.silent = silent
        """True when no attempt got any reply at all (the sonde is gone)."""


class _MeasurementFailed(SensorError):
    """A measurement could not be completed this round (already rejected)."""


class _Transcript:
    """The exchanges of a probe, as a technician will read them."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []

    def add(self, sent: str, received: str, note: str = "") -> None:
        self.exchanges.append(Exchange(sent, received, note))

    def annotate(self, note: str) -> None:
        if self.exchanges:
            last = self.exchanges[-1]
            joined = f"{last.note}; {note}" if last.note else note
            self.exchanges[-1] = replace(last, note=joined)


class _Adapter:
    """One open adapter port: write a command, read reply lines."""

    def __init__(
        self,
        link: SerialLink,
        *,
        terminator: bytes,
        settle_s: float = SETTLE_S,
        transcript: _Transcript | None = None,
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
        loop = asyncio.get_running_loop()
        stop = loop.time() + _SETTLE_MAX_S
        while loop.time() < stop:
            try:
                line = await self._link.readline(self._settle_s)
            except SensorTimeout:
                return
            except ProtocolError:
                continue
            self._record("", escape(line), "late line, dropped")

    def _record(self, sent: str, received: str, note: str = "") -> None:
        if self.transcript is not None:
            self.transcript.add(sent, received, note)


class _Session:
    """Commands to the sondes behind one adapter, with the spec's retries."""

    def __init__(
        self, adapter: _Adapter, reject: RejectFn, clock: Callable[[], int] = time.time_ns
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

        ``service_request_owed``: the sonde's service request is late; see ``_Adapter.ask``.
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
        raise _CommandFailed(
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
        ``aD0!`` recognises it (``_Adapter.ask``) instead of taking it for an
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


def _next_slot(previous: float, interval: float, now: float) -> float:
    """The poll time after ``previous`` on its fixed cadence, skipping slots already past."""
    slot = previous + interval
    if slot < now:
        slot += math.ceil((now - slot) / interval) * interval
    return slot


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
        while True:
            opened = False
            try:
                async with SerialLink(self.port, first.baudrate, sensor=self.name) as link:
                    opened = True
                    logger.info("%s: opened at %d baud", self.name, first.baudrate)
                    if first.open_delay_s:
                        await asyncio.sleep(first.open_delay_s)
                    adapter = _Adapter(
                        link, terminator=first.terminator_bytes, settle_s=self._settle_s
                    )
                    await self._serve(_Session(adapter, sink.reject, self._clock), sink)
            except SensorError as exc:
                delay = self._backoff.next_delay()
                if opened:
                    for cfg in self.sensors:
                        sink.reject(cfg.id, "disconnected", f"{self.port}: {exc.problem}")
                logger.warning("%s: %s; reopening in %.2f s", self.name, exc.problem, delay)
            await asyncio.sleep(delay)

    async def _serve(self, session: _Session, sink: Sink) -> None:
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
                s.next_due = _next_slot(s.next_due, s.cfg.interval_s, after)
            silent_rounds = 0 if session.adapter.heard else silent_rounds + 1
            if silent_rounds >= self._max_silent_rounds:
                raise SensorError(
                    self.name, f"the adapter answered nothing in {silent_rounds} rounds"
                )

    async def _round(self, session: _Session, due: list[_Sonde], sink: Sink) -> None:
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

    async def _identify(self, session: _Session, sonde: _Sonde, sink: Sink) -> bool:
        try:
            identity = await session.identify(sonde.cfg)
        except _CommandFailed:
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
        if isinstance(exc, _CommandFailed) and exc.silent:
            sonde.identity = None  # it went away: identify it again when it answers
        elif not isinstance(exc, _CommandFailed | _MeasurementFailed):
            raise exc  # the port failed: let run() reopen it
        logger.debug("%s: no reading this round: %s", sonde.cfg.id, exc.problem)

    async def _submit(self, sink: Sink, reading: Reading) -> None:
        await sink.submit(reading)
        self._backoff.reset()


# -- technician tools ---------------------------------------------------------------------


async def probe_sdi12(cfg: Sdi12SensorConfig) -> ProbeResult:
    """One identify and one measurement, with every command and reply as an ``Exchange``."""
    transcript = _Transcript()

    def note(sensor: str, reason: str, detail: str) -> None:
        transcript.annotate(f"{reason}: {detail}")

    reading: Reading | None = None
    error: str | None = None
    try:
        async with SerialLink(cfg.port, cfg.baudrate, sensor=cfg.id) as link:
            if cfg.open_delay_s:
                await asyncio.sleep(cfg.open_delay_s)
            adapter = _Adapter(link, terminator=cfg.terminator_bytes, transcript=transcript)
            session = _Session(adapter, note)
            request = MeasureRequest.parse(cfg.command)
            try:
                await session.identify(cfg)
            except _CommandFailed as exc:
                logger.debug("%s: identify failed: %s", cfg.id, exc.problem)
            reading = await session.measure(cfg, request)
    except _CommandFailed as exc:
        error = (
            f"address {cfg.address!r} on {cfg.port} did not answer: check the wiring, the "
            f"sonde's power and its address ({exc.problem})"
            if exc.silent
            else f"address {cfg.address!r} answered, but never validly: {exc.problem}"
        )
    except SensorError as exc:
        error = exc.problem
    return ProbeResult(cfg.id, tuple(transcript.exchanges), reading, error)


def _quantity_name(info: ParameterInfo, index: int) -> str:
    name = re.sub(r"[^0-9a-z]+", "_", info.name.lower()).strip("_")
    return name or f"value{index}"


def _snippet(
    port: str,
    address: str,
    request: MeasureRequest,
    quantities: Sequence[tuple[str, str]],
    *,
    named: bool,
    terminator: str,
    baudrate: int,
) -> str:
    q = json.dumps  # a JSON string is a valid TOML basic string
    lines = [
        "[[sensor]]",
        f"id = {q(f'sdi12-{address}')}",
        'driver = "sdi12"',
        f"port = {q(port)}",
        f"address = {q(address)}",
        f"command = {q(request.code)}",
        "quantities = [" + ("" if named else "  # name each value and its unit"),
        *(f"    [{q(name)}, {q(unit)}]," for name, unit in quantities),
        "]",
        "interval_s = 60.0",
        "timeout_s = 1.0",
    ]
    if terminator != "none":
        lines.append(f"terminator = {q(terminator)}")
    if baudrate != 9600:
        lines.append(f"baudrate = {baudrate}")
    return "\n".join(lines) + "\n"


async def _measurement_shape(
    session: _Session, cfg: Sdi12SensorConfig, identity: Identity | None, request: MeasureRequest
) -> tuple[int, list[tuple[str, str]], bool]:
    """(value count, quantity names, whether the sonde named them) for a snippet."""
    count: int | None = None
    names: list[tuple[str, str]] = []
    if identity is not None and identity.version_number >= 14:
        try:
            reply = await session.command(
                cfg,
                identify_measurement(cfg.address, request),
                lambda line: parse_measure_reply(line, cfg.address, request),
            )
            count = reply.count
            for number in range(1, count + 1):
                info = await session.command(
                    cfg,
                    identify_parameter(cfg.address, request, number),
                    lambda line: parse_parameter_info(line, cfg.address, crc=request.crc),
                )
                if info is None:
                    break
                names.append((_quantity_name(info, number), info.units or "1"))
        except _CommandFailed:
            names = []
    if count is None:
        # Before v1.4 only a real measurement tells the count; the next command aborts it.
        reply = await session.command(
            cfg,
            request.command(cfg.address),
            lambda line: parse_measure_reply(line, cfg.address, request),
        )
        count = reply.count
    if len(names) == count:
        return count, names, True
    return count, [(f"value{i}", "1") for i in range(1, count + 1)], False


async def scan_sdi12(
    port: str,
    *,
    budget_s: float,
    baudrate: int = 9600,
    terminator: str = "none",
    open_delay_s: float = 2.5,
    reply_timeout_s: float = SCAN_REPLY_TIMEOUT_S,
    adapter_address: str | None = "z",
) -> list[Found]:
    """Find the sondes on one adapter within ``budget_s`` seconds.

    Asks ``?!`` once (a lone sonde names itself and is asked first), then
    ``a!`` at every address (0-9 first, then A-Z, a-z) until the budget runs
    out; each address that answers is described at once with ``aI!`` and its
    measurement shape (``aIM!`` and ``aIM_nnn!`` on v1.4 sondes, else ``aM!``).
    ``adapter_address`` is skipped: Dr. Liu's adapter answers there itself.
    Addresses left when the budget is spent are not tried (logged). One
    attempt per address: a scan trades the spec's retries for coverage.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_s
    found: list[Found] = []
    probe = Sdi12SensorConfig(
        id="scan",
        port=port,
        address="0",
        quantities=(("value", "1"),),
        timeout_s=reply_timeout_s,
        retries=0,
        baudrate=baudrate,
        terminator=terminator,  # type: ignore[arg-type]  # checked by the caller's CLI/config
        open_delay_s=open_delay_s,
    )

    def left() -> float:
        return deadline - loop.time()

    def ignore(sensor: str, reason: str, detail: str) -> None:
        logger.debug("scan %s: %s: %s", port, reason, detail)

    try:
        async with (
            SerialLink(port, baudrate, sensor=f"scan[{port}]") as link,
            asyncio.timeout_at(deadline),
        ):
            if open_delay_s:
                await asyncio.sleep(open_delay_s)
            session = _Session(_Adapter(link, terminator=probe.terminator_bytes), ignore)
            order = [a for a in ADDRESSES if a != adapter_address]
            try:
                lone = await session.command(probe, address_query(), parse_address)
                if lone in order:
                    order.remove(lone)
                    order.insert(0, lone)
            except _CommandFailed:
                pass  # none, or several talking at once: ask each address
            for index, address in enumerate(order):
                if left() < reply_timeout_s:
                    logger.warning(
                        "scan %s: budget spent; addresses %s not tried", port, order[index:]
                    )
                    break
                cfg = replace(probe, address=address)
                try:
                    await session.command(
                        cfg,
                        acknowledge(address),
                        functools.partial(parse_acknowledge, address=address),
                    )
                except _CommandFailed:
                    continue
                # Described at once, so what the budget allowed to find comes with a snippet.
                found.append(await _describe(session, replace(cfg, retries=1)))
    except TimeoutError:
        logger.warning("scan %s: budget of %.1f s spent", port, budget_s)
    except SensorError as exc:
        logger.warning("scan %s: %s", port, exc.problem)
    return found


async def _describe(session: _Session, cfg: Sdi12SensorConfig) -> Found:
    identity: Identity | None = None
    with contextlib.suppress(_CommandFailed):
        identity = await session.identify(cfg)
    request = MeasureRequest()
    try:
        count, quantities, named = await _measurement_shape(session, cfg, identity, request)
    except (_CommandFailed, CountMismatch):
        count, quantities, named = 1, [("value1", "1")], False
    who = (
        f"{identity.vendor} {identity.model} v{identity.version}"
        + (f" serial {identity.serial}" if identity.serial else "")
        + f" (SDI-12 {identity.sdi12_version})"
        if identity is not None
        else "unidentified sonde (no valid aI! reply)"
    )
    description = f"SDI-12 address {cfg.address}: {who}, M returns {count} value(s)"
    snippet = _snippet(
        cfg.port,
        cfg.address,
        request,
        quantities,
        named=named,
        terminator=cfg.terminator,
        baudrate=cfg.baudrate,
    )
    return Found(cfg.port, "sdi12", description, snippet)
