"""``EzoSource``: reads one Atlas Scientific EZO circuit (pH, ORP, RTD, DO, EC) over UART.

It opens the port, discards stale
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
jittered back-off. A port that fails or will not open is told to the sink
once per outage (``link-lost``, or ``port-unavailable`` before it ever
opened), so status and the gap records name the cause.

``read_once`` is the seam ``gateway probe`` uses (``tools.probe_ezo``).

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
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from gateway.backoff import Backoff
from gateway.drivers.ezo.config import EZO_OUTPUTS, EzoSensorConfig
from gateway.drivers.ezo.protocol import (
    Interpretation,
    QueryReply,
    ReadingLine,
    Rejected,
    StatusLine,
    interpret,
    parse_identity,
    parse_line,
    parse_outputs,
    parse_scale,
    to_celsius,
)
from gateway.drivers.ezo.sites import SiteTemperatures
from gateway.drivers.link.cadence import advance
from gateway.drivers.link.drain import drain
from gateway.drivers.link.serial import SerialLink
from gateway.errors import ProtocolError, SensorError, SensorTimeout
from gateway.pipeline import Event, Gap, Reading, Sink, Value
from gateway.silence import LINK_LOST, PORT_UNAVAILABLE

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

__all__ = ["EzoSource", "LineLink", "build_sources"]

logger = logging.getLogger(__name__)

# -- the driver -------------------------------------------------------------------------

# Temperature compensation (sensor-protocols §1.3, §1.5): the circuits that take `T,`,
# and the value each falls back to (its factory default) when the site's RTD goes stale.
_COMPENSATED_DEFAULT_C = {"ph": 25.0, "ec": 25.0, "do": 20.0}
_COMPENSATION_STEP_C = 0.05  # resend T only when the water moved at least this much
QUIET_S = 0.35  # silence that means the circuit has finished talking (generic delay 300 ms)
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
        """Read until cancelled; reopen the port after failures. Never raises for bad input.

        A port that fails or will not open is reported to ``sink`` once per outage
        (``link-lost`` once it has been open, else ``port-unavailable``), so status and
        the gap records name the cause; timeouts were reported one by one already."""
        cfg = self.config
        opened = False
        down = False
        while True:
            link: SerialLink | None = None
            try:
                async with SerialLink(cfg.port, cfg.baudrate, sensor=self.name) as link:
                    opened, down = True, False
                    logger.info("%s: opened %s at %d baud", self.name, cfg.port, cfg.baudrate)
                    await self._serve(link, sink)
            except _IdentityMismatch as exc:
                sink.reject(self.name, "identity-mismatch", exc.problem)
                delay = self._identity_retry_s
            except SensorError as exc:
                delay = self._backoff.next_delay()
                logger.warning("%s: %s; reopening in %.2f s", self.name, exc.problem, delay)
                link_failed = link is None or link.failed is not None
                if link_failed and not down:
                    reason = LINK_LOST if opened else PORT_UNAVAILABLE
                    sink.reject(self.name, reason, f"{cfg.port}: {exc.problem}")
                    down = True
            await asyncio.sleep(delay)

    async def read_once(self, link: LineLink, sink: Sink) -> None:
        """The start sequence (polled, whatever ``mode`` says) and one ``R``, on ``link``.

        What ``gateway probe`` runs over a recording link: the reading, the
        ``sensor-info`` event and any rejects go to ``sink`` as in ``run``.

        Raises:
            SensorError: the circuit did not answer, answered as another circuit,
                or rebooted or went to sleep during the reading.
        """
        try:
            await self._start(link, sink, stream=False)
            await self._poll(link, sink)
        except _Restart as exc:
            raise SensorError(self.name, f"{exc} during the reading; probe again") from exc

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

        def dropped(raw: bytes) -> None:
            logger.debug("%s: dropped %r after a restart notice", self.name, raw)

        await drain(link, quiet_s=QUIET_S, within_s=self.config.timeout_s, dropped=dropped)

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
            slot = advance(slot, interval, now, who=self.name, what="poll")

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


def build_sources(
    sensors: Sequence[EzoSensorConfig], config: GatewayConfig, device_id: str
) -> list[EzoSource]:
    """The driver row's ``build``: a source per circuit, sharing one ``SiteTemperatures``
    (an RTD's readings compensate pH/EC/DO at its site)."""
    sites = SiteTemperatures()
    return [EzoSource(s, sites=sites) for s in sensors]
