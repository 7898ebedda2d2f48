"""Modbus RTU slaves on an RS-485 bus, described by register profiles.

``config`` (the ``[[sensor]]`` keys and the per-bus checks), ``rtu`` (pure
frames and CRC), ``profile`` (the register-profile loader and codec; the
shipped ``*.toml`` profiles are in ``gateway/modbus_profiles/``), ``link``
(the bus, one turn per reading), ``source`` (``ModbusSource``, one per bus)
and ``tools`` (``probe_modbus``, ``scan_modbus``); ``DRIVER`` is the row of
the driver table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from gateway.drivers.base import Driver, Found, ProbeResult, Source
from gateway.drivers.modbus.config import ModbusSensorConfig, check_modbus_buses, parse_modbus

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

__all__ = ["DRIVER"]


def _build(
    sensors: Sequence[ModbusSensorConfig], config: GatewayConfig, device_id: str
) -> list[Source]:
    from gateway.drivers.modbus.source import ModbusSource

    # one client per bus, reading all its slaves
    return [ModbusSource(on_bus) for on_bus in check_modbus_buses(sensors).values()]


def _check(config: GatewayConfig) -> None:
    check_modbus_buses(config.sensors)


async def _probe(sensor: ModbusSensorConfig, config: GatewayConfig) -> ProbeResult:
    from gateway.drivers.modbus.tools import probe_modbus

    return await probe_modbus(sensor)


async def _scan(port: str, budget_s: float) -> list[Found]:
    from gateway.drivers.modbus.tools import scan_modbus

    return await scan_modbus(port, budget_s=budget_s)


DRIVER = Driver(
    name="modbus",
    config_type=ModbusSensorConfig,
    parse=parse_modbus,
    build=_build,
    probe=_probe,
    scan=_scan,
    scan_share=0.45,  # it takes longest: slaves x settings
    check=_check,
    grace_s=lambda s: s.timeout_s * (s.retries + 1),
    where=lambda s: s.port,
)
