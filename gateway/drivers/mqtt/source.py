"""MQTT sensor nodes: one broker connection for every MQTT sensor.

Payloads (the riverseal JSON contract, SenML) are checked by the pure
``gateway.drivers.mqtt.payload``; topics are routed to sensors by the pure
``gateway.drivers.mqtt.topics``. This module is the IO around them.

``MqttSource`` keeps a persistent session (``clean_session=False``, a stable
client id) and subscribes every sensor filter at QoS 1 after every connect.
Messages are decoded and routed one at a time in arrival order; their
commits run concurrently (so the log's group commit can batch them), and each
message is acknowledged (PUBACK) only after every record it produced has been
committed, in arrival order (MQTT 3.1.1 §4.6). A reading the log never
committed is therefore redelivered by the broker. At most
``max_inflight`` messages wait for their commit; reading pauses beyond that.
A malformed message is rejected and still acknowledged: redelivering it would
not make it valid.

Duplicates (redelivery, a node re-sending a message) carry the same dedup key
and are dropped by the sink. A forward jump in a node's ``seq`` (JSON
contract) leaves the numbers skipped *open* for ``reorder_window_s``: a node
or the broker redelivering after a reconnect can deliver them late, and a
late one is logged like any other. Numbers still missing when the window
closes (checked on every message and by a tick while connected; time spent
disconnected does not count), or once the node's ``seq`` has gone
REORDER_MAX_SEQS past them, are declared lost by a signed Gap from the
arrival of the reading before the hole to the arrival of the one that
revealed it; so are any still open when the node restarts or the source
stops. A ``seq`` that goes back with a newer node time, and is not one of its
open numbers, is a restarted node, not a gap.
Silence (no message for longer than a sensor's interval) is not detected here:
the gateway's central silence tracker does that for every driver.

TLS: with ``tls_ca`` set, the broker certificate must chain to that CA and
match the host name (always checked); ``tls_cert``/``tls_key`` add a client
certificate. ``aiomqtt.MqttError``, ``OSError`` and ``ssl.SSLError`` become
``SensorError`` naming the broker and the cause in ``_session`` and nowhere
else; the supervisor in ``run`` reconnects after a capped, jittered back-off,
and tells every sensor with a fixed id why the broker cannot be heard
(``link_reason``: ``broker-refused``, ``-unreachable``, ``-tls``, ``-lost``),
once per outage or change of cause, so its gap records name it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiomqtt
import paho.mqtt.client as paho
from aiomqtt.exceptions import MqttConnectError

from gateway.backoff import Backoff
from gateway.drivers.mqtt.config import MqttConfig, MqttSensorConfig
from gateway.drivers.mqtt.payload import (
    MAX_RAW_CHARS,
    Decoded,
    PayloadError,
    decode,
)
from gateway.drivers.mqtt.topics import Route, TopicRouter
from gateway.errors import GatewayError, SensorError
from gateway.pipeline import Gap, Reading, Sink
from gateway.silence import BROKER_LOST, BROKER_REFUSED, BROKER_TLS, BROKER_UNREACHABLE

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

__all__ = [
    "REORDER_MAX_SEQS",
    "SEQUENCE_GAP",
    "MqttSource",
    "build_sources",
    "explain_mqtt_error",
    "link_reason",
    "tls_context",
]

logger = logging.getLogger(__name__)

_NAME = "mqtt"
SEQUENCE_GAP = "source sequence gap"
"""The reason of a gap record that declares a node's ``seq`` numbers lost."""
_HANDSHAKE_S = 10.0
_SUBSCRIBE_TIMEOUT_S = 120.0
"""How long the SUBACK may take: it comes after a resumed session's whole backlog."""


def broker_where(config: MqttConfig) -> str:
    scheme = "mqtts" if config.tls_ca is not None else "mqtt"
    return f"broker {scheme}://{config.host}:{config.port}"


def tls_context(config: MqttConfig) -> ssl.SSLContext | None:
    """The TLS context for ``config`` (None without ``tls_ca``): only ``tls_ca`` is
    trusted, the host name is checked, TLS 1.2 at least.

    Raises:
        SensorError: a TLS file is missing, unreadable or not PEM; names the broker and file.
    """
    if config.tls_ca is None:
        return None
    where = broker_where(config)
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(config.tls_ca))
    except OSError as exc:  # ssl.SSLError is an OSError too
        raise SensorError(_NAME, f"{where}: CA file {config.tls_ca}: {_file_problem(exc)}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.tls_cert is not None and config.tls_key is not None:
        try:
            context.load_cert_chain(str(config.tls_cert), str(config.tls_key))
        except OSError as exc:
            raise SensorError(
                _NAME,
                f"{where}: client certificate {config.tls_cert} / key {config.tls_key}: "
                f"{_file_problem(exc)}",
            ) from exc
    return context


def _file_problem(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"not a usable PEM file ({exc.reason or exc})"
    return exc.strerror or str(exc)


def explain_mqtt_error(exc: BaseException) -> str:
    """A technician's reading of a connection failure (login refused, TLS, refused port)."""
    if isinstance(exc, MqttConnectError) and exc.rc is not None:
        code = exc.rc if isinstance(exc.rc, int) else int(exc.rc.value)
        if code in (4, 134):
            return (
                "the broker refused the login: bad username or password "
                "(check [mqtt] username and password)"
            )
        if code in (5, 135):
            return (
                "the broker refused the login: not authorised "
                "(check [mqtt] username and password, and the broker's access rules)"
            )
    text = str(exc) or type(exc).__name__
    if "CERTIFICATE_VERIFY_FAILED" in text:
        if "mismatch" in text:
            return (
                f"TLS handshake failed: the broker's certificate does not name this host ({text})"
            )
        return (
            "TLS handshake failed: the broker's certificate is not signed by the CA in "
            f"[mqtt] tls_ca ({text})"
        )
    if "SSL" in text or "TLS" in text:
        return f"TLS handshake failed: {text}"
    if text == "Operation timed out":
        return (
            "no answer from the broker in time (a TLS port that wants a client certificate: "
            "set tls_cert and tls_key; a plain port or not an MQTT broker: check host and port)"
        )
    if "Connection refused" in text:
        return f"connection refused ({text}): is the broker running and listening on that port?"
    return text


def link_reason(exc: BaseException | None, *, connected: bool) -> str:
    """Why the broker cannot be heard, as a gap reason (gateway/silence.py)."""
    if isinstance(exc, MqttConnectError) and exc.rc not in (None, 0):
        return BROKER_REFUSED
    text = str(exc)
    if isinstance(exc, ssl.SSLError) or "SSL" in text or "CERTIFICATE" in text:
        return BROKER_TLS
    return BROKER_LOST if connected else BROKER_UNREACHABLE


REORDER_MAX_SEQS = 1000
"""A missing ``seq`` number is declared lost at the latest when the node's ``seq`` has gone
this far past it, whatever the window: a verifier stops waiting for late numbers there
(docs/bundle-format.md §9, 8 d)."""
_TICK_MAX_S = 1.0


@dataclass
class _Hole:
    """Numbers ``first``–``last`` of a node's ``seq`` not received (yet)."""

    first: int
    last: int
    from_ns: int
    """The arrival of the reading before the jump, and of the one that revealed it."""
    to_ns: int
    due_ns: int
    """When the window closes: then they are declared lost."""


@dataclass
class _Track:
    """What we last saw from one node (memory only; unknown after a start)."""

    seq: int
    """The highest ``seq`` seen."""
    received_ns: int
    time: str
    """Sensor time, normalised: comparable as a string."""
    holes: list[_Hole]
    """Numbers below ``seq`` still awaited, ascending."""


def _fill(holes: list[_Hole], seq: int) -> bool:
    """Take ``seq`` out of the open holes; whether it was one (a late arrival)."""
    for k, h in enumerate(holes):
        if h.first <= seq <= h.last:
            parts = []
            if h.first < seq:
                parts.append(_Hole(h.first, seq - 1, h.from_ns, h.to_ns, h.due_ns))
            if seq < h.last:
                parts.append(_Hole(seq + 1, h.last, h.from_ns, h.to_ns, h.due_ns))
            holes[k : k + 1] = parts
            return True
    return False


def readings_of(sensor: str, decoded: Decoded, received_ns: int) -> list[Reading]:
    raw = decoded.text if len(decoded.text) <= MAX_RAW_CHARS else None
    return [
        Reading(
            sensor,
            s.values,
            received_ns,
            sensor_time=s.time,
            src_seq=s.seq,
            raw=raw,
            dedup_key=s.dedup_key,
        )
        for s in decoded.samples
    ]


def _paho(client: aiomqtt.Client) -> paho.Client:
    """The paho client inside an aiomqtt 2.5.1 client, for manual acknowledgements.

    aiomqtt 2.5.1 has no API for them, and paho by default sends PUBACK as soon
    as a message arrives, before we have committed it. At-least-once delivery
    into the log needs PUBACK after the commit, so we reach into the wrapped
    client: ``manual_ack_set(True)`` before connecting, then ``ack(mid, qos)``
    per message after its commit (in arrival order, as MQTT 3.1.1 §4.6
    requires). Revisit when moving to aiomqtt 3, which drops paho.
    """
    return client._client


def new_client(
    config: MqttConfig, identifier: str, *, persistent: bool, context: ssl.SSLContext | None
) -> aiomqtt.Client:
    return aiomqtt.Client(
        config.host,
        config.port,
        username=config.username,
        password=config.password,
        identifier=identifier,
        clean_session=not persistent,
        keepalive=config.keepalive,
        protocol=aiomqtt.ProtocolVersion.V311,
        tls_context=context,
    )


async def check_tls(config: MqttConfig, context: ssl.SSLContext | None) -> None:
    """Do one TLS handshake ourselves before paho does.

    paho 2.2 leaks its socket when the handshake fails and loses the error's type;
    a handshake of our own fails cleanly and says why (untrusted CA, wrong name).
    """
    if context is None:
        return
    async with asyncio.timeout(_HANDSHAKE_S):
        _, writer = await asyncio.open_connection(config.host, config.port, ssl=context)
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(_HANDSHAKE_S):
            await writer.wait_closed()


def discard_client(client: aiomqtt.Client) -> None:
    """Close the socket aiomqtt 2.5.1 leaves open when a connection attempt fails."""
    sock = _paho(client).socket()
    if sock is not None:
        sock.close()


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_error(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]


class MqttSource:
    """Reads every MQTT sensor through one persistent-session connection.

    Args:
        config: broker connection settings.
        sensors: the MQTT sensors; each has its own topic filter.
        device_id: the gateway's id; the default client id is ``riverseal-<device_id>``.
        clock: receive time source, ``time.time_ns`` by default.
        backoff: reconnect delays (default: 0.5 s doubling to 30 s, jittered).

    Raises:
        ConfigError: two sensors have the same topic filter.
    """

    name = _NAME

    def __init__(
        self,
        config: MqttConfig,
        sensors: Sequence[MqttSensorConfig],
        *,
        device_id: str,
        clock: Callable[[], int] = time.time_ns,
        backoff: Backoff | None = None,
    ) -> None:
        self.config = config
        self.client_id = config.client_id or f"riverseal-{device_id}"
        self.router = TopicRouter(sensors)
        self._names = {s.id: dict(s.names) for s in sensors}
        self._watched = [s.id for s in sensors if "{" not in s.id]
        """Sensors with a fixed id: told why the broker cannot be heard (a template's are
        known only once they publish)."""
        self._clock = clock
        self._backoff = backoff if backoff is not None else Backoff()
        self._tracks: dict[str, _Track] = {}
        self._window_ns = round(config.reorder_window_s * 1e9)
        self._next_due: int | None = None
        """The earliest ``due_ns`` of any open hole (None: none is open)."""
        self._unsent: list[Gap] = []
        """Gaps declared whose commit has not succeeded yet: a session that ends first
        leaves them here, and the next session (or ``flush``) submits them again."""
        self.connected = False
        """True while connected and subscribed."""
        self.connections = 0
        """Successful connections so far (each one subscribed)."""
        self.last_error: str | None = None
        """Why the last connection ended or failed, as logged."""

    async def run(self, sink: Sink) -> None:
        """Read until cancelled; reconnect after failures. Never raises for bad input.

        On the way out, numbers still awaited are declared lost (the gateway forgets its
        nodes' counts when it stops)."""
        told: str | None = None  # the link reason last reported, until a connection works
        try:
            while True:
                before = self.connections
                try:
                    await self._session(sink)
                except SensorError as exc:
                    self.last_error = str(exc)
                    connected = self.connections > before
                    reason = link_reason(exc.__cause__, connected=connected)
                    if connected or reason != told:
                        # Once per outage (or change of cause): status and the gap
                        # records of every watched sensor name it.
                        for sensor in self._watched:
                            sink.reject(sensor, reason, exc.problem)
                        told = reason
                    delay = self._backoff.next_delay()
                    logger.warning("mqtt: %s; reconnecting in %.2f s", exc.problem, delay)
                    await asyncio.sleep(delay)
        finally:
            await self.flush(sink)

    async def flush(self, sink: Sink, *, timeout_s: float = 5.0) -> None:
        """Declare every number still awaited lost, now, and log every gap not yet
        committed (bounded by ``timeout_s``)."""
        self._unsent.extend(self._expire(None))
        if not self._unsent:
            return
        try:
            async with asyncio.timeout(timeout_s):
                for gap in list(self._unsent):
                    await self._submit_gap(sink, gap)
        except (GatewayError, TimeoutError) as exc:
            logger.error(
                "mqtt: %d gap record(s) of lost messages not logged: %s",
                len(self._unsent),
                exc or "timed out",
            )

    def _gap_job(self, sink: Sink, gap: Gap) -> Coroutine[Any, Any, None]:
        self._unsent.append(gap)
        return self._submit_gap(sink, gap)

    async def _submit_gap(self, sink: Sink, gap: Gap) -> None:
        await sink.submit_gap(gap)
        self._unsent.remove(gap)

    async def _session(self, sink: Sink) -> None:
        """One connection, from connect to failure; the error boundary of this driver."""
        where = broker_where(self.config)
        context = tls_context(self.config)
        client = new_client(self.config, self.client_id, persistent=True, context=context)
        # Before connecting: the broker redelivers as soon as the session resumes,
        # and paho would acknowledge those messages on arrival.
        _paho(client).manual_ack_set(True)
        try:
            await check_tls(self.config, context)
            async with client:
                self._reopen(self._clock())
                await self._pump(client, sink, where)
        except (aiomqtt.MqttError, OSError) as exc:
            discard_client(client)
            raise SensorError(self.name, f"{where}: {explain_mqtt_error(exc)}") from exc
        except BaseExceptionGroup as group:
            first = _first_error(group)
            if isinstance(first, aiomqtt.MqttError | OSError):
                raise SensorError(self.name, f"{where}: {explain_mqtt_error(first)}") from first
            raise first from None
        finally:
            self.connected = False

    async def _subscribed(self, client: aiomqtt.Client, sink: Sink, where: str) -> None:
        """Subscribe (again) beside the pump: a resumed session's backlog is delivered
        ahead of the SUBACK, and waiting for it before taking messages made a large
        backlog time the subscription out, so the session ended unacknowledged and
        the next one met the same backlog (found by tests/faults/test_sigkill.py)."""
        await self._subscribe(client, sink)
        logger.info("mqtt: connected to %s as %s", where, self.client_id)
        self.connected = True
        self.connections += 1
        self._backoff.reset()

    async def _subscribe(self, client: aiomqtt.Client, sink: Sink) -> None:
        filters = self.router.subscriptions()
        if not filters:
            return
        granted = await client.subscribe([(f, 1) for f in filters], timeout=_SUBSCRIBE_TIMEOUT_S)
        codes = [code if isinstance(code, int) else int(code.value) for code in granted]
        for topic, qos in zip(filters, codes, strict=False):
            if qos not in (0, 1, 2):
                sink.reject(
                    self.name,
                    "subscribe-refused",
                    f"broker refused the subscription to {topic!r} (code {qos})",
                )

    async def _pump(self, client: aiomqtt.Client, sink: Sink, where: str) -> None:
        """Subscribe; route and decode in order, commit concurrently, acknowledge in order."""
        inflight: asyncio.Queue[tuple[aiomqtt.Message, list[asyncio.Task[Any]]]] = asyncio.Queue(
            self.config.max_inflight
        )
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._subscribed(client, sink, where), name="mqtt.subscribe")
            tg.create_task(self._acknowledge(client, inflight), name="mqtt.acknowledge")
            for gap in list(self._unsent):  # left by a session that ended before their commit
                tg.create_task(self._submit_gap(sink, gap), name="mqtt.commit")
            if self._window_ns > 0:
                tg.create_task(self._tick(sink, tg), name="mqtt.reorder")
            async for message in client.messages:
                work = [
                    tg.create_task(job, name="mqtt.commit") for job in self._handle(message, sink)
                ]
                await inflight.put((message, work))
            raise SensorError(self.name, f"{broker_where(self.config)}: message stream ended")

    async def _acknowledge(
        self,
        client: aiomqtt.Client,
        inflight: asyncio.Queue[tuple[aiomqtt.Message, list[asyncio.Task[Any]]]],
    ) -> None:
        mqtt = _paho(client)
        while True:
            message, work = await inflight.get()
            for task in work:
                await task  # a failed commit ends the session: no PUBACK, so redelivery
            rc = mqtt.ack(message.mid, message.qos)
            if rc != paho.MQTT_ERR_SUCCESS:
                raise aiomqtt.MqttCodeError(rc, f"could not acknowledge message {message.mid}")

    async def _tick(self, sink: Sink, tg: asyncio.TaskGroup) -> None:
        """While connected: declare lost the numbers whose window closed with no message
        arriving to notice it."""
        every = min(_TICK_MAX_S, self._window_ns / 4e9)
        while True:
            await asyncio.sleep(every)
            for gap in self._expire(self._clock()):
                tg.create_task(self._gap_job(sink, gap), name="mqtt.commit")

    def _handle(self, message: aiomqtt.Message, sink: Sink) -> list[Coroutine[Any, Any, object]]:
        """Decode one message and update the per-node state, in arrival order; return the
        commits it needs, in order (gaps declared lost before the reading that showed it)."""
        received_ns = self._clock()
        jobs: list[Coroutine[Any, Any, object]] = [
            self._gap_job(sink, gap) for gap in self._expire(received_ns)
        ]
        topic = message.topic.value
        route = self.router.route(topic)
        if route is None:
            # E.g. a subscription left in the persistent session by an older config.
            sink.reject(self.name, "no-sensor", f"{topic!r} matches no sensor's topic")
            return jobs
        try:
            sensor = route.sensor_id(message.topic.value.split("/"))
        except ValueError as exc:
            sink.reject(route.sensor.id, "bad-topic", f"{topic}: {exc}")
            return jobs
        payload = message.payload if isinstance(message.payload, bytes) else b""
        try:
            decoded = self._decode(route, sensor, payload, received_ns)
        except PayloadError as exc:
            sink.reject(sensor, exc.reason, f"{topic}: {exc.problem}")
            return jobs
        for reading in readings_of(sensor, decoded, received_ns):
            jobs.extend(self._gap_job(sink, gap) for gap in self._track(reading))
            jobs.append(self._submit(sink, reading))
        return jobs

    def _decode(self, route: Route, sensor: str, payload: bytes, received_ns: int) -> Decoded:
        return decode(
            route.sensor.format,
            payload,
            sensor=sensor,
            max_bytes=self.config.max_payload_bytes,
            received_ns=received_ns,
            names=self._names.get(route.sensor.id),
        )

    def _track(self, reading: Reading) -> list[Gap]:
        """Follow a node's seq; the gaps to log before its reading (declared lost now)."""
        seq, stamp = reading.src_seq, reading.sensor_time or ""
        if seq is None:
            return []
        sensor, now = reading.sensor, reading.received_ns
        track = self._tracks.get(sensor)
        if track is None:
            self._tracks[sensor] = _Track(seq, now, stamp, [])
            return []
        if seq > track.seq:
            if seq > track.seq + 1:
                hole = _Hole(track.seq + 1, seq - 1, track.received_ns, now, now + self._window_ns)
                track.holes.append(hole)
                logger.debug(
                    "mqtt: %s seq jumped from %d to %d: awaiting the numbers between",
                    sensor,
                    track.seq,
                    seq,
                )
                if self._next_due is None or hole.due_ns < self._next_due:
                    self._next_due = hole.due_ns
            track.seq, track.received_ns = seq, now
            track.time = max(track.time, stamp)
            if self._window_ns == 0:
                return self._declare(sensor, track, None)
            return self._declare(sensor, track, seq - REORDER_MAX_SEQS + 1)
        if _fill(track.holes, seq):
            logger.info("mqtt: %s seq %d arrived late (out of order): logged", sensor, seq)
            return []
        if stamp > track.time:
            logger.info(
                "mqtt: %s seq went back from %d to %d with a newer time (node restarted?)",
                sensor,
                track.seq,
                seq,
            )
            gaps = self._declare(sensor, track, None)
            self._tracks[sensor] = _Track(seq, now, stamp, [])
            return gaps
        return []

    def _declare(self, sensor: str, track: _Track, below: int | None) -> list[Gap]:
        """Take the holes of ``track`` below ``below`` (all with None) as lost: their gaps."""
        gaps: list[Gap] = []
        keep: list[_Hole] = []
        for hole in track.holes:
            if below is not None and hole.first >= below:
                keep.append(hole)
                continue
            last = hole.last
            if below is not None and last >= below:
                keep.append(_Hole(below, last, hole.from_ns, hole.to_ns, hole.due_ns))
                last = below - 1
            gaps.append(
                Gap(
                    sensor,
                    SEQUENCE_GAP,
                    from_ns=hole.from_ns,
                    to_ns=hole.to_ns,
                    src_seq_from=hole.first,
                    src_seq_to=last,
                )
            )
        track.holes = keep
        for gap in gaps:
            logger.info(
                "mqtt: %s seq %s lost: not received (gap recorded)",
                sensor,
                gap.src_seq_from
                if gap.src_seq_from == gap.src_seq_to
                else f"{gap.src_seq_from}–{gap.src_seq_to}",
            )
        return gaps

    def _expire(self, now_ns: int | None) -> list[Gap]:
        """The gaps of every hole whose window closed by ``now_ns`` (every one with None)."""
        if self._next_due is None or (now_ns is not None and now_ns < self._next_due):
            return []
        gaps: list[Gap] = []
        next_due: int | None = None
        for sensor, track in self._tracks.items():
            if not track.holes:
                continue
            due: list[_Hole] = []
            rest: list[_Hole] = []
            for h in track.holes:
                (due if now_ns is None or h.due_ns <= now_ns else rest).append(h)
            if due:
                track.holes = due
                gaps += self._declare(sensor, track, None)
                track.holes = rest
            for h in track.holes:
                if next_due is None or h.due_ns < next_due:
                    next_due = h.due_ns
        self._next_due = next_due
        return gaps

    def _reopen(self, now_ns: int) -> None:
        """After a (re)connect: a full window for every hole, for redelivery to fill it."""
        for track in self._tracks.values():
            for h in track.holes:
                h.due_ns = max(h.due_ns, now_ns + self._window_ns)
        dues = [h.due_ns for t in self._tracks.values() for h in t.holes]
        self._next_due = min(dues, default=None)

    @staticmethod
    async def _submit(sink: Sink, reading: Reading) -> None:
        if not await sink.submit(reading):
            logger.debug("mqtt: %s %s is a duplicate", reading.sensor, reading.dedup_key)


def build_sources(
    sensors: Sequence[MqttSensorConfig], config: GatewayConfig, device_id: str
) -> list[MqttSource]:
    """The driver row's ``build``: one connection to the ``[mqtt]`` broker for all."""
    assert config.mqtt is not None  # the driver's check guarantees it
    return [MqttSource(config.mqtt, list(sensors), device_id=device_id)]
