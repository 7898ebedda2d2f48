"""The technician's tools: ``gateway probe`` and ``gateway scan``.

Both run without the daemon (stop it first: a serial port has one reader).
``probe`` asks one configured sensor for one reading and shows every byte
exchanged; ``scan`` walks serial ports looking for EZO circuits, SDI-12
sondes and Modbus slaves, each within a time budget, and prints a config
snippet for what it finds.
"""

from __future__ import annotations

import asyncio
import glob
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import TextIO

from .config import GatewayConfig
from .errors import ConfigError
from .sources.base import Found, ProbeResult

__all__ = ["SCANNERS", "candidate_ports", "print_found", "print_probe", "probe", "scan"]

DEFAULT_SCAN_BUDGET_S = 20.0
"""Per port; split between the protocols tried on it."""

_PORT_GLOBS = (
    "/dev/serial/by-id/*",
    "/dev/ttyUSB*",
    "/dev/ttyACM*",
    "/dev/ttyAMA*",
    "/dev/ttyS0",
)

Scanner = Callable[[str, float], Awaitable[list[Found]]]


async def _scan_ezo(port: str, budget_s: float) -> list[Found]:
    from .sources.ezo import scan_ezo

    return await scan_ezo(port, budget_s=budget_s)


async def _scan_sdi12(port: str, budget_s: float) -> list[Found]:
    from .sources.sdi12 import scan_sdi12

    return await scan_sdi12(port, budget_s=budget_s)


async def _scan_modbus(port: str, budget_s: float) -> list[Found]:
    from .sources.modbus import scan_modbus

    return await scan_modbus(port, budget_s=budget_s)


SCANNERS: dict[str, tuple[Scanner, float]] = {
    # name: (scanner, share of the port's budget). EZO first: it answers fastest and
    # its ASCII probes are harmless to the other two; Modbus last, it takes longest.
    "ezo": (_scan_ezo, 0.25),
    "sdi12": (_scan_sdi12, 0.30),
    "modbus": (_scan_modbus, 0.45),
}


def candidate_ports() -> list[str]:
    """Serial ports worth scanning; by-id names first, each device once."""
    seen: set[str] = set()
    ports: list[str] = []
    for pattern in _PORT_GLOBS:
        for path in sorted(glob.glob(pattern)):
            real = os.path.realpath(path)
            if real not in seen:
                seen.add(real)
                ports.append(path)
    return ports


async def _scan_port(port: str, budget_s: float, kinds: Sequence[str]) -> list[Found]:
    found: list[Found] = []
    total = sum(SCANNERS[k][1] for k in kinds)
    for kind in kinds:
        scanner, share = SCANNERS[kind]
        found += await scanner(port, budget_s * share / total)
        if found:
            break  # one port, one bus: a second protocol on it is not worth the wait
    return found


async def scan(
    ports: Sequence[str],
    *,
    budget_s: float = DEFAULT_SCAN_BUDGET_S,
    kinds: Sequence[str] = tuple(SCANNERS),
) -> list[Found]:
    """Scan ``ports`` concurrently (each port's protocols one after another)."""
    for k in kinds:
        if k not in SCANNERS:
            raise ConfigError("--only", f"{k!r} is not one of {', '.join(SCANNERS)}")
    results = await asyncio.gather(*(_scan_port(p, budget_s, kinds) for p in ports))
    return [f for per_port in results for f in per_port]


async def probe(config: GatewayConfig, sensor_id: str) -> ProbeResult:
    """One reading from the configured sensor ``sensor_id``."""
    from .config.ezo import EzoSensorConfig
    from .config.modbus import ModbusSensorConfig
    from .config.mqtt import MqttSensorConfig
    from .config.sdi12 import Sdi12SensorConfig

    by_id = {s.id: s for s in config.sensors}
    cfg = by_id.get(sensor_id)
    if cfg is None:
        known = ", ".join(sorted(by_id)) or "none"
        raise ConfigError(
            f"{config.path}: sensor", f"{sensor_id!r} is not configured (known: {known})"
        )
    if isinstance(cfg, EzoSensorConfig):
        from .sources.ezo import probe_ezo

        return await probe_ezo(cfg)
    if isinstance(cfg, ModbusSensorConfig):
        from .sources.modbus import probe_modbus

        return await probe_modbus(cfg)
    if isinstance(cfg, Sdi12SensorConfig):
        from .sources.sdi12 import probe_sdi12

        return await probe_sdi12(cfg)
    if isinstance(cfg, MqttSensorConfig):
        from .sources.mqtt import probe_mqtt

        assert config.mqtt is not None  # parse_config guarantees it
        return await probe_mqtt(cfg, config.mqtt)
    raise ConfigError(f"{config.path}: sensor {sensor_id}", "has no probe for its driver")


def print_probe(result: ProbeResult, out: TextIO) -> None:
    w = out.write
    w(f"sensor {result.sensor}\n")
    for ex in result.exchanges:
        if ex.sent:
            w(f"  → {ex.sent}\n")
        if ex.received:
            w(f"  ← {ex.received}\n")
        if ex.note:
            w(f"    ({ex.note})\n")
    if result.reading is not None:
        for v in result.reading.values:
            w(f"  {v.quantity:<20} {v.value:>12g} {v.unit}\n")
    if result.error:
        w(f"no reading: {result.error}\n")


def print_found(found: Sequence[Found], ports: Sequence[str], out: TextIO) -> None:
    w = out.write
    w(f"scanned {len(ports)} port(s): {', '.join(ports) or 'none'}\n")
    if not found:
        w(
            "found nothing. Check wiring, power and baud rate;"
            " stop the gateway if it holds the port.\n"
        )
        return
    for f in found:
        w(f"  {f.port}: {f.driver} — {f.description}\n")
    w("\n# paste into gateway.toml:\n")
    for f in found:
        w(f.snippet.rstrip() + "\n\n")
