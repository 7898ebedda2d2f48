"""Which driver reads which configured sensor.

Drivers are imported only when a sensor needs them, so a box without MQTT
sensors never imports the MQTT stack.
"""

from __future__ import annotations

from ..config import EzoSensorConfig, GatewayConfig, MqttSensorConfig
from ..config.modbus import check_modbus_buses
from ..config.sdi12 import check_sdi12_buses
from .base import Source
from .sites import SiteTemperatures

__all__ = ["build_sources"]


def build_sources(config: GatewayConfig, device_id: str) -> list[Source]:
    """One source per serial sensor, one per SDI-12 adapter port (serving every address
    on it), one MQTT connection for all MQTT sensors."""
    sources: list[Source] = []
    mqtt_sensors: list[MqttSensorConfig] = []
    sites = SiteTemperatures()  # an RTD's readings compensate pH/EC/DO at its site
    for s in config.sensors:
        if isinstance(s, EzoSensorConfig):
            from .ezo import EzoSource

            sources.append(EzoSource(s, sites=sites))
        elif isinstance(s, MqttSensorConfig):
            mqtt_sensors.append(s)
    for sdi12_sensors in check_sdi12_buses(config.sensors).values():
        from .sdi12 import Sdi12Source

        sources.append(Sdi12Source(sdi12_sensors))
    for modbus_sensors in check_modbus_buses(config.sensors).values():
        from .modbus import ModbusSource

        sources.append(ModbusSource(modbus_sensors))  # one client per bus, all its slaves
    if mqtt_sensors:
        from .mqtt import MqttSource

        assert config.mqtt is not None  # parse_config guarantees it
        sources.append(MqttSource(config.mqtt, mqtt_sensors, device_id=device_id))
    return sources
