"""MQTT sensor nodes: one broker connection for every MQTT sensor.

Payload contract (with simulators/mqtt_node.py), one UTF-8 JSON object::

    {"seq": 17, "time": "2026-11-21T05:09:56.123Z",
     "values": [{"q": "temperature", "v": 14.213, "u": "Cel"}, ...]}

``parse_payload`` is pure and strict: exactly these three keys; ``seq`` an
integer in [0, 2**63); ``time`` RFC 3339 (normalised to UTC,
``YYYY-MM-DDTHH:MM:SS.ffffffZ``); ``values`` a non-empty list of objects with
exactly ``q`` (quantity, unique within the payload), ``v`` (a finite JSON
number, not a boolean) and ``u`` (unit). Anything else raises PayloadError,
a ProtocolError whose ``reason`` is a short label for ``Sink.reject``.

``MqttSource`` keeps a persistent session (``clean_session=False``, a stable
client id) and subscribes every sensor topic at QoS 1 after every connect.
Messages are handled one at a time, in arrival order, and each is
acknowledged (PUBACK) only after ``Sink.submit`` has returned, so a reading
the log never committed is redelivered by the broker. A malformed message is
rejected and still acknowledged: redelivering it would not make it valid.
Duplicates (redelivery, a node re-sending a message) carry the same dedup key
``src_seq:<seq>@<time>`` and are dropped by the sink. The node's own time is
in the key so that a node whose counter restarts at 0 is not mistaken for a
duplicate of what it sent before the restart. A forward jump in a node's seq
is recorded as a signed Gap before the reading that revealed it.
``aiomqtt.MqttError`` and ``OSError`` become ``SensorError`` in ``_session``
and nowhere else; the supervisor in ``run`` reconnects after a capped,
jittered back-off.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

from gateway.backoff import Backoff
from gateway.config import MqttConfig, MqttSensorConfig
from gateway.errors import ProtocolError, SensorError
from gateway.sources.base import Gap, Reading, Sink, Value

__all__ = ["MAX_RAW_CHARS", "MqttSource", "ParsedPayload", "PayloadError", "parse_payload"]

log = logging.getLogger(__name__)

MAX_RAW_CHARS = 1024
"""Payloads up to this many characters are kept verbatim in ``Reading.raw``."""

_MAX_SEQ = 2**63  # the log stores seq as a signed 64-bit integer
_MAX_NAME = 64
_KEYS = ("seq", "time", "values")
_VALUE_KEYS = ("q", "v", "u")
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


class PayloadError(ProtocolError):
    """A message that breaks the payload contract; ``reason`` labels it for ``Sink.reject``."""

    def __init__(self, sensor: str, reason: str, problem: str) -> None:
        super().__init__(sensor, problem)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ParsedPayload:
    seq: int
    time: str
    """RFC 3339 UTC with microseconds, e.g. ``2026-11-21T05:09:56.123000Z``."""
    values: tuple[Value, ...]
    text: str
    """The payload as received, decoded."""


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _parse_time(text: str, bad: Callable[[str], PayloadError]) -> str:
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise bad(f"time {text!r} is not an RFC 3339 date-time")
    year, month, day, hour, minute, second = (int(g) for g in match.group(1, 2, 3, 4, 5, 6))
    fraction = (match.group(7) or "").ljust(6, "0")[:6]
    if match.group(8):
        tz = UTC
    else:
        sign = 1 if match.group(9) == "+" else -1
        hours, minutes = int(match.group(10)), int(match.group(11))
        if hours > 23 or minutes > 59:
            raise bad(f"time {text!r} has an invalid UTC offset")
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        moment = datetime(year, month, day, hour, minute, second, int(fraction), tzinfo=tz)
        utc = moment.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise bad(f"time {text!r} is not a valid date-time ({exc})") from None
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _exact_keys(
    obj: dict[str, Any], keys: tuple[str, ...], where: str, bad: Callable[[str], PayloadError]
) -> None:
    missing = [k for k in keys if k not in obj]
    if missing:
        raise bad(f"{where} is missing {missing[0]!r}")
    extra = sorted(set(obj) - set(keys))
    if extra:
        raise bad(f"{where} has unknown key {extra[0]!r}")


def _parse_value(index: int, item: object, bad: Callable[[str], PayloadError]) -> Value:
    where = f"values[{index}]"
    if not isinstance(item, dict):
        raise bad(f"{where} must be an object, got {type(item).__name__}")
    _exact_keys(item, _VALUE_KEYS, where, bad)
    names: dict[str, str] = {}
    for key in ("q", "u"):
        name = item[key]
        if not isinstance(name, str):
            raise bad(f"{where}.{key} must be a string, got {type(name).__name__}")
        if not name or len(name) > _MAX_NAME or not name.isprintable():
            raise bad(f"{where}.{key} {name!r} must be 1 to {_MAX_NAME} printable characters")
        names[key] = name
    number = item["v"]
    if isinstance(number, bool) or not isinstance(number, int | float):
        raise bad(f"{where}.v must be a number, got {type(number).__name__}")
    try:
        value = float(number)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        raise bad(f"{where}.v is not a finite number")
    return Value(names["q"], value, names["u"])


def parse_payload(
    topic: str, payload: bytes, max_bytes: int, *, sensor: str | None = None
) -> ParsedPayload:
    """Check one message against the payload contract.

    ``sensor`` names the sensor in errors (default: the topic).

    Raises:
        PayloadError: with ``reason`` one of ``too-large``, ``not-utf8``,
            ``not-json``, ``bad-payload``; the message names the field.
    """
    who = sensor or topic

    def bad(problem: str, reason: str = "bad-payload") -> PayloadError:
        return PayloadError(who, reason, problem)

    if len(payload) > max_bytes:
        raise bad(
            f"payload of {len(payload)} bytes is over the {max_bytes}-byte limit", "too-large"
        )
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad(f"payload is not UTF-8 (byte {exc.start})", "not-utf8") from None
    try:
        doc = json.loads(text, parse_constant=_no_constants, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as exc:
        raise bad(f"payload is not JSON: {exc}", "not-json") from None
    if not isinstance(doc, dict):
        raise bad(f"payload must be a JSON object, got {type(doc).__name__}")
    _exact_keys(doc, _KEYS, "payload", bad)
    seq = doc["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise bad(f"seq must be an integer, got {type(seq).__name__}")
    if not 0 <= seq < _MAX_SEQ:
        raise bad(f"seq {seq} is out of range [0, 2**63)")
    stamp = doc["time"]
    if not isinstance(stamp, str):
        raise bad(f"time must be a string, got {type(stamp).__name__}")
    sensor_time = _parse_time(stamp, bad)
    items = doc["values"]
    if not isinstance(items, list):
        raise bad(f"values must be a list, got {type(items).__name__}")
    if not items:
        raise bad("values is empty")
    values = tuple(_parse_value(i, item, bad) for i, item in enumerate(items))
    seen: set[str] = set()
    for i, v in enumerate(values):
        if v.quantity in seen:
            raise bad(f"values[{i}].q {v.quantity!r} repeats an earlier quantity")
        seen.add(v.quantity)
    return ParsedPayload(seq, sensor_time, values, text)


# -- the driver -----------------------------------------------------------------------


def _paho(client: aiomqtt.Client) -> paho.Client:
    """The paho client inside an aiomqtt 2.5.1 client, for manual acknowledgements.

    aiomqtt 2.5.1 has no API for them, and paho by default sends PUBACK as soon
    as a message arrives, before we have committed it. At-least-once delivery
    into the log needs PUBACK after the commit, so we reach into the wrapped
    client: ``manual_ack_set(True)`` before connecting, then ``ack(mid, qos)``
    per message after ``Sink.submit`` returns (in arrival order, as MQTT 3.1.1
    §4.6 requires). Revisit when moving to aiomqtt 3, which drops paho.
    """
    return client._client


@dataclass
class _Track:
    """What we last logged for one sensor (memory only; unknown after a start)."""

    seq: int
    received_ns: int
    time: str
    """Sensor time, normalised: comparable as a string."""


class MqttSource:
    """Reads every MQTT sensor through one persistent-session connection.

    Args:
        config: broker connection settings.
        sensors: the MQTT sensors; each has its own topic.
        device_id: the gateway's id; the default client id is ``riverseal-<device_id>``.
        clock: receive time source, ``time.time_ns`` by default.
        backoff: reconnect delays (default: 0.5 s doubling to 30 s, jittered).
    """

    name = "mqtt"

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
        self._by_topic: dict[str, str] = {}
        for sensor in sensors:
            if sensor.topic in self._by_topic:
                raise ValueError(
                    f"sensors {self._by_topic[sensor.topic]!r} and {sensor.id!r} share topic "
                    f"{sensor.topic!r}"
                )
            self._by_topic[sensor.topic] = sensor.id
        self._clock = clock
        self._backoff = backoff if backoff is not None else Backoff()
        self._tracks: dict[str, _Track] = {}
        self.connected = False
        """True while connected and subscribed."""
        self.connections = 0
        """Successful connections so far (each one subscribed)."""

    async def run(self, sink: Sink) -> None:
        """Read until cancelled; reconnect after failures. Never raises for bad input."""
        while True:
            try:
                await self._session(sink)
            except SensorError as exc:
                delay = self._backoff.next_delay()
                log.warning("mqtt: %s; reconnecting in %.2f s", exc.problem, delay)
                await asyncio.sleep(delay)

    def _client(self) -> aiomqtt.Client:
        cfg = self.config
        client = aiomqtt.Client(
            cfg.host,
            cfg.port,
            username=cfg.username,
            password=cfg.password,
            identifier=self.client_id,
            clean_session=False,
            keepalive=cfg.keepalive,
            protocol=aiomqtt.ProtocolVersion.V311,
        )
        _paho(client).manual_ack_set(True)
        return client

    async def _session(self, sink: Sink) -> None:
        """One connection, from connect to failure; the error boundary of this driver."""
        where = f"broker {self.config.host}:{self.config.port}"
        try:
            async with self._client() as client:
                await self._subscribe(client, sink)
                log.info("mqtt: connected to %s as %s", where, self.client_id)
                self.connected = True
                self.connections += 1
                self._backoff.reset()
                async for message in client.messages:
                    await self._handle(client, message, sink)
        except aiomqtt.MqttError as exc:
            raise SensorError(self.name, f"{where}: {exc}") from exc
        except OSError as exc:
            raise SensorError(self.name, f"{where}: {exc}") from exc
        finally:
            self.connected = False
        raise SensorError(self.name, f"{where}: message stream ended")

    async def _subscribe(self, client: aiomqtt.Client, sink: Sink) -> None:
        topics = list(self._by_topic)
        if not topics:
            return
        granted = await client.subscribe([(topic, 1) for topic in topics])
        codes = [code if isinstance(code, int) else int(code.value) for code in granted]
        for topic, qos in zip(topics, codes, strict=False):
            if qos not in (0, 1, 2):
                sink.reject(
                    self._by_topic[topic],
                    "subscribe-refused",
                    f"broker refused the subscription to {topic!r} (code {qos})",
                )

    async def _handle(self, client: aiomqtt.Client, message: aiomqtt.Message, sink: Sink) -> None:
        received_ns = self._clock()
        topic = message.topic.value
        sensor = self._by_topic.get(topic)
        if sensor is None:
            # A subscription left in the persistent session by an older config.
            log.warning("mqtt: message on unconfigured topic %r ignored", topic)
        else:
            await self._process(sensor, topic, message.payload, received_ns, sink)
        self._ack(client, message)

    async def _process(
        self, sensor: str, topic: str, payload: bytes, received_ns: int, sink: Sink
    ) -> None:
        try:
            parsed = parse_payload(topic, payload, self.config.max_payload_bytes, sensor=sensor)
        except PayloadError as exc:
            sink.reject(sensor, exc.reason, f"{topic}: {exc.problem}")
            return
        track = self._tracks.get(sensor)
        if track is not None and parsed.seq > track.seq + 1:
            await sink.submit_gap(
                Gap(
                    sensor,
                    "source sequence gap",
                    from_ns=track.received_ns,
                    to_ns=received_ns,
                    src_seq_from=track.seq + 1,
                    src_seq_to=parsed.seq - 1,
                )
            )
        reading = Reading(
            sensor,
            parsed.values,
            received_ns,
            sensor_time=parsed.time,
            src_seq=parsed.seq,
            raw=parsed.text if len(parsed.text) <= MAX_RAW_CHARS else None,
            dedup_key=f"src_seq:{parsed.seq}@{parsed.time}",
        )
        if not await sink.submit(reading):
            log.debug("mqtt: %s seq %d is a duplicate", sensor, parsed.seq)
            if track is None or parsed.seq > track.seq:
                self._tracks[sensor] = _Track(parsed.seq, received_ns, parsed.time)
            return
        if track is not None and parsed.seq < track.seq:
            log.info(
                "mqtt: %s seq went back from %d to %d (node restarted?)",
                sensor,
                track.seq,
                parsed.seq,
            )
        self._tracks[sensor] = _Track(parsed.seq, received_ns, parsed.time)

    def _ack(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        rc = _paho(client).ack(message.mid, message.qos)
        if rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(rc, f"could not acknowledge message {message.mid}")
