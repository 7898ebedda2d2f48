"""The technician's tools for Modbus RTU slaves: ``probe_modbus`` and ``scan_modbus``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from gateway.drivers.base import Found, ProbeResult
from gateway.drivers.link.record import Transcript
from gateway.drivers.link.snippet import TomlValue, sensor_snippet
from gateway.drivers.modbus.config import ModbusSensorConfig
from gateway.drivers.modbus.link import LinkLost, ModbusLink
from gateway.drivers.modbus.profile import (
    Profile,
    load_profile,
    shipped_profiles,
)
from gateway.drivers.modbus.rtu import ModbusExceptionReply
from gateway.drivers.modbus.source import SlaveReader, reading_of
from gateway.errors import SensorError

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

__all__ = ["probe", "probe_modbus", "scan", "scan_modbus"]

logger = logging.getLogger(__name__)


async def probe_modbus(cfg: ModbusSensorConfig) -> ProbeResult:
    """One reading of one configured sensor, with every request and reply frame in hex.

    Opens the port itself, so it fails (saying so) while the daemon holds it.
    """
    transcript = Transcript()
    rejected: list[str] = []

    def reject(sensor: str, reason: str, detail: str) -> None:
        rejected.append(f"{reason}: {detail}")

    reader = SlaveReader(cfg, reject, time.time_ns, transcript)
    try:
        async with ModbusLink(
            cfg.port, baudrate=cfg.baudrate, parity=cfg.parity, stopbits=cfg.stopbits
        ) as link:
            out = await reader.read(link)
    except LinkLost as exc:
        return ProbeResult(
            cfg.id,
            transcript.exchanges,
            None,
            f"{exc.problem}; check the cable and the port name (is the gateway running "
            "and holding the port?)",
        )
    reading = reading_of(cfg, out)
    error = out.error
    if error is None and rejected:
        error = "; ".join(rejected)
    elif error is not None and rejected:
        error = f"{error} ({'; '.join(rejected)})"
    return ProbeResult(cfg.id, transcript.exchanges, reading, error)


COMMON_SETTINGS: tuple[tuple[int, str], ...] = (
    (9600, "N"),
    (19200, "E"),
    (19200, "N"),
    (9600, "E"),
    (4800, "N"),
    (38400, "N"),
    (115200, "N"),
)
"""Serial settings ``scan_modbus`` tries (8 data bits, 1 stop bit), commonest first
(sensor-protocols §2.4), after those of the shipped profiles."""


def _scan_settings() -> list[tuple[int, str]]:
    settings: list[tuple[int, str]] = []
    for p in _shipped():
        s = (p.serial.baudrate, p.serial.parity)
        if s not in settings:
            settings.append(s)
    settings += [s for s in COMMON_SETTINGS if s not in settings]
    # No parity first: commoner, and the only kind a pty (a simulated bus) takes.
    return sorted(settings, key=lambda s: s[1] != "N")


def _shipped() -> list[Profile]:
    return [load_profile(name) for name in shipped_profiles()]


async def scan_modbus(
    port: str,
    budget_s: float,
    *,
    max_slave: int = 247,
    probe_timeout_s: float = 0.15,
    settings: Iterable[tuple[int, str]] | None = None,
) -> list[Found]:
    """Find slaves on ``port`` within ``budget_s`` seconds.

    Tries serial settings (the shipped profiles' factory ones, then common
    ones) and slave ids, factory default ids first, then 1..``max_slave``.
    Any reply, an exception response included, means a slave is there. A
    slave is named by the first shipped profile whose identifying registers
    match; otherwise its snippet carries a placeholder profile path. Stops
    when the budget is spent and returns what it found so far.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_s
    profiles = _shipped()
    tries = list(settings) if settings is not None else _scan_settings()
    defaults = sorted({p.serial.slave for p in profiles} | {1})
    ids = [i for i in defaults if i <= max_slave]
    later = [i for i in range(1, max_slave + 1) if i not in ids]
    found: dict[int, Found] = {}
    try:
        async with asyncio.timeout_at(deadline):
            for batch in (ids, later):
                for baudrate, parity in tries:
                    todo = [i for i in batch if i not in found]
                    if todo:
                        await _scan_batch(
                            port, baudrate, parity, todo, probe_timeout_s, profiles, found
                        )
    except TimeoutError:
        logger.info("scan of %s stopped at its budget of %g s", port, budget_s)
    return [found[i] for i in sorted(found)]


async def _scan_batch(
    port: str,
    baudrate: int,
    parity: str,
    ids: Sequence[int],
    timeout_s: float,
    profiles: Sequence[Profile],
    found: dict[int, Found],
) -> None:
    try:
        async with ModbusLink(port, baudrate=baudrate, parity=parity, name=f"scan[{port}]") as link:
            for slave in ids:
                if await _answers(link, slave, timeout_s):
                    model = await _identify(link, slave, timeout_s, profiles)
                    found[slave] = _found(port, slave, baudrate, parity, model)
    except LinkLost as exc:
        logger.warning("scan of %s at %d 8%s1: %s", port, baudrate, parity, exc.problem)


async def _answers(link: ModbusLink, slave: int, timeout_s: float) -> bool:
    try:
        await link.read(slave, 3, 0, 1, timeout_s=timeout_s, sensor=f"slave {slave}")
    except ModbusExceptionReply:
        return True  # a well-formed "no" is still a slave
    except LinkLost:
        raise
    except SensorError:
        return False
    return True


async def _identify(
    link: ModbusLink, slave: int, timeout_s: float, profiles: Sequence[Profile]
) -> Profile | None:
    for profile in profiles:
        if not profile.identify:
            continue
        try:
            for check in profile.identify:
                (word,) = await link.read(
                    slave, check.function, check.address, 1, timeout_s=timeout_s, sensor="scan"
                )
                if word != check.equals:
                    break
            else:
                return profile
        except LinkLost:
            raise
        except SensorError:
            continue
    return None


def _found(port: str, slave: int, baudrate: int, parity: str, model: Profile | None) -> Found:
    profile: tuple[str, TomlValue] | tuple[str, TomlValue, str]
    if model is not None:
        what = f"{model.model} (profile {model.name})"
        profile = ("profile", model.name)
    else:
        what = "unknown model: no shipped profile's identifying registers matched"
        profile = (
            "profile",
            "/etc/riverseal/profiles/FILL-IN.toml",
            "write one: see docs/modbus-profiles.md",
        )
    snippet = sensor_snippet(
        ("id", f"modbus-{slave}"),
        ("driver", "modbus"),
        ("port", port),  # escaped: a port name is pasted into the config as is
        ("slave", slave),
        profile,
        ("baudrate", baudrate),
        ("parity", parity),
        ("interval_s", 10.0),
    )
    return Found(port, "modbus", f"slave {slave} at {baudrate} 8{parity}1: {what}", snippet)


async def probe(sensor: ModbusSensorConfig, config: GatewayConfig) -> ProbeResult:
    """The driver row's ``probe``: ``probe_modbus``."""
    return await probe_modbus(sensor)


scan = scan_modbus
"""The driver row's ``scan``."""
