"""SDI-12 sondes behind a serial adapter, several addresses per adapter port.

``config`` (the ``[[sensor]]`` keys and the per-adapter checks), ``protocol``
(pure commands and replies), ``source`` (``Sdi12Source``, one per adapter)
and ``tools`` (``probe_sdi12``, ``scan_sdi12``); ``DRIVER`` is the row of the
driver table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from gateway.drivers.base import Driver, Found, ProbeResult, Source
from gateway.drivers.sdi12.config import Sdi12SensorConfig, check_sdi12_buses, parse_sdi12

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

__all__ = ["DRIVER"]


def _build(
    sensors: Sequence[Sdi12SensorConfig], config: GatewayConfig, device_id: str
) -> list[Source]:
    from gateway.drivers.sdi12.source import Sdi12Source

    # one source per adapter port, serving every address on it
    return [Sdi12Source(on_port) for on_port in check_sdi12_buses(sensors).values()]


def _check(config: GatewayConfig) -> None:
    check_sdi12_buses(config.sensors)


async def _probe(sensor: Sdi12SensorConfig, config: GatewayConfig) -> ProbeResult:
    from gateway.drivers.sdi12.tools import probe_sdi12

    return await probe_sdi12(sensor)


async def _scan(port: str, budget_s: float) -> list[Found]:
    from gateway.drivers.sdi12.tools import scan_sdi12

    return await scan_sdi12(port, budget_s=budget_s)


DRIVER = Driver(
    name="sdi12",
    config_type=Sdi12SensorConfig,
    parse=parse_sdi12,
    build=_build,
    probe=_probe,
    scan=_scan,
    scan_share=0.30,
    check=_check,
    grace_s=lambda s: s.timeout_s * (s.retries + 1),
    where=lambda s: s.port,
)
