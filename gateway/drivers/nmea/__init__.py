"""NMEA 0183 talkers on a serial line: water temperature (``MTW``) and depth (``DBT``).

``DRIVER`` is the family's row of the driver table. Its modules: ``config``
(the ``[[sensor]]`` keys, one sentence type per sensor, and the per-port
checks), ``protocol`` (pure: sentence, checksum, value), ``source``
(``NmeaSource``, one per port; it only listens) and ``tools`` (``probe_nmea``,
``scan_nmea``). The simulator is ``simulators/nmea.py``.

This family is the worked example of adding one (docs/drivers.md): its folder,
one row in ``gateway.drivers.DRIVERS``, its simulator and its tests, and
nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.drivers.base import Driver
from gateway.drivers.nmea.config import NmeaSensorConfig, check_nmea_ports, parse_nmea

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

__all__ = ["DRIVER"]


def _check(config: GatewayConfig) -> None:
    check_nmea_ports(config.sensors)


DRIVER = Driver(
    home=__name__,
    config_type=NmeaSensorConfig,
    parse=parse_nmea,
    scan_share=0.10,  # it only listens: harmless, but a talker may take a second or two
    check=_check,
    grace_s=lambda s: s.timeout_s,
    where=lambda s: s.port,
)
