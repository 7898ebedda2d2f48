"""``[[sensor]]`` tables: the fields every driver shares, then the driver's own.

Each driver keeps its settings and their parser in its own module; this
table of parsers is the one place that lists them.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ConfigError
from .ezo import EzoSensorConfig, parse_ezo
from .modbus import ModbusSensorConfig, parse_modbus
from .mqtt import MqttSensorConfig, parse_mqtt_sensor
from .sdi12 import Sdi12SensorConfig, parse_sdi12
from .table import Table

__all__ = ["SENSOR_DRIVERS", "SensorConfig", "parse_sensor"]

SensorConfig = EzoSensorConfig | MqttSensorConfig | Sdi12SensorConfig | ModbusSensorConfig

SENSOR_DRIVERS: dict[str, Callable[[Table, str, str | None], SensorConfig]] = {
    "ezo": parse_ezo,
    "mqtt": parse_mqtt_sensor,
    "modbus": parse_modbus,
    "sdi12": parse_sdi12,
}


def parse_sensor(t: Table) -> SensorConfig:
    sid = t.get("id", str, required=True)
    t.check("id", sid, lambda s: bool(s) and s.isprintable() and " " not in s, "is not a valid id")
    site = t.optional("site", str)
    driver = t.get("driver", str, required=True)
    parse = SENSOR_DRIVERS.get(driver)
    if parse is None:
        known = ", ".join(repr(d) for d in SENSOR_DRIVERS)
        raise ConfigError(f"{t.where}.driver", f"{driver!r} is not one of {known}")
    sensor = parse(t, sid, site)
    t.done()
    return sensor
