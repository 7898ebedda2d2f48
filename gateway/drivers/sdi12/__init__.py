"""SDI-12 sondes behind a serial adapter, several addresses per adapter port.

``DRIVER`` is the family's row of the driver table; its modules document
themselves (``config``, ``protocol``, ``source``, ``tools``).
"""

from __future__ import annotations

from gateway.drivers.link.buses import bus_driver
from gateway.drivers.sdi12.config import Sdi12SensorConfig, check_sdi12_buses, parse_sdi12

__all__ = ["DRIVER"]

DRIVER = bus_driver(
    __name__, Sdi12SensorConfig, parse_sdi12, buses=check_sdi12_buses, scan_share=0.30
)
