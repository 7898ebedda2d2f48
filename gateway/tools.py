"""The technician's tools: ``gateway probe`` and ``gateway scan``.

Both run without the daemon (stop it first: a serial port has one reader).
``probe`` asks one configured sensor for one reading and shows every byte
exchanged; ``scan`` walks serial ports trying each serial driver of the
table (``SCANNERS``: EZO circuits, SDI-12 sondes, Modbus slaves, ...), each
within its share of a time budget, and prints a config snippet for what it
finds.
"""

from __future__ import annotations

import asyncio
import glob
import os
from collections.abc import Sequence
from typing import TextIO

from gateway.drivers import DRIVERS, driver_for
from gateway.drivers.base import Found, ProbeResult, Scanner

from .config import GatewayConfig
from .errors import ConfigError

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

SCANNERS: dict[str, tuple[Scanner, float]] = {
    d.name: (d.scan, d.scan_share) for d in DRIVERS if d.scan_share
}
"""name: (scanner, share of the port's budget), in the driver table's order."""


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
    by_id = {s.id: s for s in config.sensors}
    cfg = by_id.get(sensor_id)
    if cfg is None:
        known = ", ".join(sorted(by_id)) or "none"
        raise ConfigError(
            f"{config.path}: sensor", f"{sensor_id!r} is not configured (known: {known})"
        )
    return await driver_for(cfg).probe(cfg, config)


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
