"""Sensor nodes publishing over MQTT (riverseal JSON or SenML), one connection for all.

``config`` (``[mqtt]`` and the ``[[sensor]]`` keys), ``payload`` and
``senml`` (pure decoders), ``topics`` (routing a topic to its sensor),
``source`` (``MqttSource``) and ``tools`` (``probe_mqtt``); ``DRIVER`` is the
row of the driver table. Not a serial family: it has no scanner.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from gateway.drivers.base import Driver, ProbeResult, Source
from gateway.drivers.mqtt.config import ID_PLACEHOLDER, MqttSensorConfig, parse_mqtt_sensor
from gateway.errors import ConfigError

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

__all__ = ["DRIVER"]


def _build(
    sensors: Sequence[MqttSensorConfig], config: GatewayConfig, device_id: str
) -> list[Source]:
    from gateway.drivers.mqtt.source import MqttSource

    assert config.mqtt is not None  # parse_config guarantees it
    return [MqttSource(config.mqtt, list(sensors), device_id=device_id)]


def _check(config: GatewayConfig) -> None:
    for i, s in enumerate(config.sensors):
        if isinstance(s, MqttSensorConfig) and config.mqtt is None:
            raise ConfigError(f"sensor[{i}].driver", "mqtt sensors need an [mqtt] section")


async def _probe(sensor: MqttSensorConfig, config: GatewayConfig) -> ProbeResult:
    from gateway.drivers.mqtt.tools import probe_mqtt

    assert config.mqtt is not None  # parse_config guarantees it
    return await probe_mqtt(sensor, config.mqtt)


DRIVER = Driver(
    name="mqtt",
    config_type=MqttSensorConfig,
    parse=parse_mqtt_sensor,
    build=_build,
    probe=_probe,
    check=_check,
    # a ``{id}`` template stands for sensors named by their topics, known only once
    # they publish: not watched for silence (their ``seq`` jumps still become gaps)
    watched=lambda s: ID_PLACEHOLDER not in s.id,
    where=lambda s: s.topic,
)
