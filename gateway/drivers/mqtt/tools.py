"""The technician's tool for MQTT sensors: ``probe_mqtt``."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import aiomqtt

from gateway.drivers.base import Exchange, ProbeResult
from gateway.drivers.link.display import escape
from gateway.drivers.mqtt.config import MqttConfig, MqttSensorConfig
from gateway.drivers.mqtt.payload import (
    PayloadError,
    decode,
)
from gateway.drivers.mqtt.source import (
    broker_where,
    check_tls,
    discard_client,
    explain_mqtt_error,
    new_client,
    readings_of,
    tls_context,
)
from gateway.drivers.mqtt.topics import TopicRouter
from gateway.errors import GatewayError

_PROBE_MAX_WAIT_S = 300.0
_PROBE_SHOW_CHARS = 2000

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

__all__ = ["probe", "probe_mqtt"]


def _printable(payload: bytes) -> str:
    shown = escape(payload, utf8=True)
    if len(shown) > _PROBE_SHOW_CHARS:
        return shown[:_PROBE_SHOW_CHARS] + f"... ({len(payload)} bytes)"
    return shown


async def probe_mqtt(
    sensor: MqttSensorConfig,
    config: MqttConfig,
    *,
    timeout_s: float | None = None,
    clock: Callable[[], int] = time.time_ns,
) -> ProbeResult:
    """Wait (bounded) for one message on ``sensor``'s topic and show it raw and parsed.

    Uses its own clean session (client id ``<client id>-probe-<pid>``), so it
    takes copies without disturbing the daemon's persistent session. Waits
    ``timeout_s`` (default: the sensor's interval plus 10 s, at most 300 s).
    Never raises for broker or payload problems: they are in ``error``.
    """
    wait = timeout_s if timeout_s is not None else min(sensor.interval_s + 10.0, _PROBE_MAX_WAIT_S)
    router = TopicRouter([sensor])
    (subscription,) = router.subscriptions()
    sent = f"SUBSCRIBE {subscription} (QoS 1)"
    identifier = f"{config.client_id or 'riverseal'}-probe-{os.getpid()}"
    where = broker_where(config)
    route = router.routes[0]
    try:
        context = tls_context(config)
    except GatewayError as exc:  # a TLS file problem, already worded
        return ProbeResult(sensor.id, (), None, str(exc))
    client = new_client(config, identifier, persistent=False, context=context)
    try:
        await check_tls(config, context)
        async with client:
            await client.subscribe(subscription, qos=1)
            async with asyncio.timeout(wait):
                async for message in client.messages:
                    found = router.route(message.topic.value)
                    if found is not None:
                        route = found
                        break
                else:
                    return ProbeResult(
                        sensor.id, (Exchange(sent, "", ""),), None, f"{where}: disconnected"
                    )
    except TimeoutError:
        return ProbeResult(
            sensor.id,
            (Exchange(sent, "", "no message"),),
            None,
            f"no message on {subscription!r} at {where} within {wait:.0f} s: is the node "
            "powered and publishing, and is the topic right?",
        )
    except (aiomqtt.MqttError, OSError) as exc:
        discard_client(client)
        return ProbeResult(sensor.id, (), None, f"{where}: {explain_mqtt_error(exc)}")
    received_ns = clock()
    topic = message.topic.value
    payload = message.payload if isinstance(message.payload, bytes) else b""
    note = f"topic {topic}, {len(payload)} bytes, format {sensor.format}" + (
        ", retained (may be old)" if message.retain else ""
    )
    exchange = (Exchange(sent, _printable(payload), note),)
    try:
        sensor_id = route.sensor_id(topic.split("/"))
    except ValueError as exc:
        return ProbeResult(sensor.id, exchange, None, f"{topic}: {exc}")
    try:
        decoded = decode(
            sensor.format,
            payload,
            sensor=sensor_id,
            max_bytes=config.max_payload_bytes,
            received_ns=received_ns,
            names=dict(sensor.names),
        )
    except PayloadError as exc:
        return ProbeResult(
            sensor_id, exchange, None, f"payload rejected ({exc.reason}): {exc.problem}"
        )
    readings = readings_of(sensor_id, decoded, received_ns)
    if len(readings) > 1:
        exchange = (
            Exchange(sent, exchange[0].received, f"{note}; {len(readings)} samples, first shown"),
        )
    return ProbeResult(sensor_id, exchange, readings[0])


async def probe(sensor: MqttSensorConfig, config: GatewayConfig) -> ProbeResult:
    """The driver row's ``probe``: ``probe_mqtt`` through the file's ``[mqtt]`` broker."""
    assert config.mqtt is not None  # the driver's check guarantees it
    return await probe_mqtt(sensor, config.mqtt)
