"""Which driver reads which configured sensor.

Drivers are imported only when a sensor needs them, so a box without MQTT
sensors never imports the MQTT stack.
"""

from __future__ import annotations

from ..config import EzoSensorConfig, GatewayConfig, MqttSensorConfig
from .base import Source

__all__ = ["build_sources"]


def build_sources(config: GatewayConfig, device_id: str) -> list[Source]:
    """One source per serial sensor, one MQTT connection for all MQTT sensors."""
    sources: list[Source] = []
    mqtt_sensors: list[MqttSensorConfig] = []
    for s in config.sensors:
        if isinstance(s, EzoSensorConfig):
            from .ezo import EzoSource

            sources.append(EzoSource(s))
        elif isinstance(s, MqttSensorConfig):
            mqtt_sensors.append(s)
    if mqtt_sensors:
        from .mqtt import MqttSource

        assert config.mqtt is not None  # parse_config guarantees it
        sources.append(MqttSource(config.mqtt, mqtt_sensors, device_id=device_id))
    return sources
