"""Sensor nodes publishing over MQTT (riverseal JSON or SenML), one connection for all.

``DRIVER`` is the family's row of the driver table. Not a serial family: it
is never scanned. Its modules: ``config`` (``[mqtt]`` and the ``[[sensor]]``
keys), ``payload`` and ``senml`` (pure decoders), ``topics`` (a topic to its
sensor), ``source`` and ``tools``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.drivers.base import Driver
from gateway.drivers.mqtt.config import ID_PLACEHOLDER, MqttSensorConfig, parse_mqtt_sensor
from gateway.errors import ConfigError

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

__all__ = ["DRIVER"]


def _check(config: GatewayConfig) -> None:
    for i, s in enumerate(config.sensors):
        if isinstance(s, MqttSensorConfig) and config.mqtt is None:
            raise ConfigError(f"sensor[{i}].driver", "mqtt sensors need an [mqtt] section")


DRIVER = Driver(
    home=__name__,
    config_type=MqttSensorConfig,
    parse=parse_mqtt_sensor,
    check=_check,
    # a ``{id}`` template stands for sensors named by their topics, known only once
    # they publish: not watched for silence (their ``seq`` jumps still become gaps)
    watched=lambda s: ID_PLACEHOLDER not in s.id,
    where=lambda s: s.topic,
)
