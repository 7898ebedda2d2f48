"""Atlas Scientific EZO circuits (pH, ORP, RTD, DO, EC) over UART.

``DRIVER`` is the family's row of the driver table; its modules document
themselves (``config``, ``protocol``, ``source``, ``sites``: temperature
compensation across a site, ``tools``).
"""

from __future__ import annotations

from gateway.drivers.base import Driver
from gateway.drivers.ezo.config import EzoSensorConfig, parse_ezo

__all__ = ["DRIVER"]

DRIVER = Driver(
    home=__name__,
    config_type=EzoSensorConfig,
    parse=parse_ezo,
    scan_share=0.25,  # it answers fastest; its ASCII probes are harmless to the others
    grace_s=lambda s: s.timeout_s,
    where=lambda s: s.port,
)
