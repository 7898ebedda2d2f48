"""The sensor drivers, and the one table of them.

Each driver family lives in its own folder, ``gateway/drivers/<family>/``:
``config.py`` (its ``[[sensor]]`` settings and their parser), its pure
protocol, ``source.py`` (the ``Source`` the daemon runs) and ``tools.py``
(``gateway probe`` / ``gateway scan``). The family's ``__init__.py`` fills
in one ``Driver`` row; ``DRIVERS`` below lists the rows. Everything that
dispatches on the driver consults this table and nothing else: config
parsing (``gateway.config.sensors``), source construction
(``build_sources``), the technician's tools (``gateway.tools``) and the
daemon's silence expectations (``gateway.daemon.sensor_expectations``).
See docs/drivers.md for adding a family.

A row names its source, probe and scanner through small functions that
import the family's heavy modules only when called, so a box without MQTT
sensors never imports the MQTT stack.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gateway.drivers.base import Driver, SensorConfig, Source
from gateway.drivers.ezo import DRIVER as EZO
from gateway.drivers.modbus import DRIVER as MODBUS
from gateway.drivers.mqtt import DRIVER as MQTT
from gateway.drivers.nmea import DRIVER as NMEA
from gateway.drivers.sdi12 import DRIVER as SDI12
from gateway.errors import ConfigError

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

__all__ = ["DRIVERS", "Driver", "SensorConfig", "build_sources", "driver_for", "driver_named"]

DRIVERS: tuple[Driver[Any], ...] = (
    EZO,
    SDI12,
    MODBUS,
    MQTT,
    NMEA,
)
"""Every driver, in the order ``gateway scan`` tries them on a port (the fastest and
most harmless first). One row a line, each family imported on a line of its own: a new
family adds two lines here and changes none."""


def driver_named(name: str, where: str) -> Driver[Any]:
    """The driver a ``[[sensor]]`` table's ``driver = "<name>"`` names.

    Raises:
        ConfigError: no driver has that name (``where`` names the key).
    """
    for d in DRIVERS:
        if d.name == name:
            return d
    known = ", ".join(repr(d.name) for d in DRIVERS)
    raise ConfigError(where, f"{name!r} is not one of {known}")


def driver_for(sensor: SensorConfig) -> Driver[Any]:
    """The driver whose config type ``sensor`` is."""
    for d in DRIVERS:
        if isinstance(sensor, d.config_type):
            return d
    raise TypeError(f"no driver reads a {type(sensor).__name__}")


def build_sources(config: GatewayConfig, device_id: str) -> list[Source]:
    """The sources that read ``config``'s sensors, each driver's built from its own
    sensors (an EZO source per circuit, one per SDI-12 adapter or Modbus bus, one MQTT
    connection for all MQTT sensors)."""
    sources: list[Source] = []
    for d in DRIVERS:
        mine: Sequence[Any] = [s for s in config.sensors if isinstance(s, d.config_type)]
        if mine:
            sources += d.build(mine, config, device_id)
    return sources
