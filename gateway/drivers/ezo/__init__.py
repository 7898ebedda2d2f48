"""Atlas Scientific EZO circuits (pH, ORP, RTD, DO, EC) over UART.

``config`` (the ``[[sensor]]`` keys), ``protocol`` (the pure line parser),
``source`` (``EzoSource``), ``sites`` (temperature compensation across a
site) and ``tools`` (``probe_ezo``, ``scan_ezo``); ``DRIVER`` is the row of
the driver table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from gateway.drivers.base import Driver, Found, ProbeResult, Source
from gateway.drivers.ezo.config import EzoSensorConfig, parse_ezo

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

__all__ = ["DRIVER"]


def _build(
    sensors: Sequence[EzoSensorConfig], config: GatewayConfig, device_id: str
) -> list[Source]:
    from gateway.drivers.ezo.sites import SiteTemperatures
    from gateway.drivers.ezo.source import EzoSource

    sites = SiteTemperatures()  # an RTD's readings compensate pH/EC/DO at its site
    return [EzoSource(s, sites=sites) for s in sensors]


async def _probe(sensor: EzoSensorConfig, config: GatewayConfig) -> ProbeResult:
    from gateway.drivers.ezo.tools import probe_ezo

    return await probe_ezo(sensor)


async def _scan(port: str, budget_s: float) -> list[Found]:
    from gateway.drivers.ezo.tools import scan_ezo

    return await scan_ezo(port, budget_s=budget_s)


DRIVER = Driver(
    name="ezo",
    config_type=EzoSensorConfig,
    parse=parse_ezo,
    build=_build,
    probe=_probe,
    scan=_scan,
    scan_share=0.25,  # it answers fastest; its ASCII probes are harmless to the others
    grace_s=lambda s: s.timeout_s,
    where=lambda s: s.port,
)
