"""Modbus RTU slaves on an RS-485 bus, described by register profiles.

``DRIVER`` is the family's row of the driver table. Its modules: ``config``,
``rtu`` (pure frames and CRC), ``profile`` (the register-profile codec; the
shipped profiles are in ``profiles/``), ``link`` (the bus, one
turn per reading), ``source`` and ``tools``.
"""

from __future__ import annotations

from gateway.drivers.link.buses import bus_driver
from gateway.drivers.modbus.config import ModbusSensorConfig, check_modbus_buses, parse_modbus

__all__ = ["DRIVER"]

# the scan takes longest here: slaves x settings
DRIVER = bus_driver(
    __name__, ModbusSensorConfig, parse_modbus, buses=check_modbus_buses, scan_share=0.45
)
