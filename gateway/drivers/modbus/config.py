"""``driver = "modbus"``: a Modbus RTU slave on an RS-485 bus, read by a register profile.

Sensors that name the same ``port`` share one bus: they must agree on its
serial settings and use distinct slave ids (``check_modbus_buses``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from gateway.drivers.link.buses import group_buses
from gateway.drivers.modbus.rtu import PARITIES, Parity
from gateway.errors import ConfigError
from gateway.toml_table import Table, positive

if TYPE_CHECKING:
    # Imported when parsing: the profile loader itself reads TOML with config.table.
    from gateway.drivers.modbus.profile import Profile

__all__ = [
    "MODBUS_BAUD_RATES",
    "MODBUS_PARITIES",
    "ModbusSensorConfig",
    "check_modbus_buses",
    "parse_modbus",
]

MODBUS_BAUD_RATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400)
MODBUS_PARITIES = PARITIES
MAX_RETRIES = 5


@dataclass(frozen=True)
class ModbusSensorConfig:
    id: str
    port: str
    """The bus's serial device, ideally a stable ``/dev/serial/by-id/...`` name."""
    slave: int
    """Modbus unit id, 1..247."""
    profile: Profile
    """The model's register profile, loaded and checked at config time."""
    profile_ref: str = ""
    """The ``profile`` setting as written (a shipped name or a path)."""
    baudrate: int = 9600
    """Default: the profile's factory setting."""
    parity: Parity = "N"
    stopbits: int = 1
    interval_s: float = 10.0
    timeout_s: float = 1.0
    """How long one request waits for its reply."""
    retries: int = 1
    """Further attempts after a request times out or its reply is corrupt."""
    site: str | None = None
    driver: Literal["modbus"] = "modbus"


def parse_modbus(t: Table, sid: str, site: str | None) -> ModbusSensorConfig:
    from gateway.drivers.modbus.profile import load_profile

    ref = t.get("profile", str, required=True)
    try:
        profile = load_profile(ref, base=t.base)
    except ConfigError as exc:
        raise ConfigError(f"{t.where}.profile", f"{exc.where}: {exc.problem}") from None
    d = profile.serial
    slave = t.get("slave", int, required=True)
    t.check("slave", slave, lambda s: 1 <= s <= 247, "is not a slave id 1..247")
    baud = t.get("baudrate", int, d.baudrate)
    t.check(
        "baudrate", baud, lambda b: b in MODBUS_BAUD_RATES, f"is not one of {MODBUS_BAUD_RATES}"
    )
    parity = t.one_of("parity", t.get("parity", str, d.parity).upper(), MODBUS_PARITIES)
    stopbits = t.get("stopbits", int, d.stopbits)
    t.check("stopbits", stopbits, lambda s: s in (1, 2), "is not 1 or 2")
    interval = t.get("interval_s", float, 10.0)
    t.check("interval_s", interval, lambda x: x >= 0.1, "must be >= 0.1 s")
    timeout = t.get("timeout_s", float, 1.0)
    t.check("timeout_s", timeout, positive, "must be > 0")
    retries = t.get("retries", int, 1)
    t.check("retries", retries, lambda r: 0 <= r <= MAX_RETRIES, f"must be 0..{MAX_RETRIES}")
    # A silent slave may cost its bus timeout x (retries + 1) per reading; that
    # must fit in its own interval or it would poll back to back.
    t.check(
        "timeout_s",
        timeout,
        lambda x: x * (retries + 1) <= interval,
        f"x (retries + 1) = {timeout * (retries + 1):g} s must not exceed interval_s {interval:g}",
    )
    return ModbusSensorConfig(
        id=sid,
        port=t.get("port", str, required=True),
        slave=slave,
        profile=profile,
        profile_ref=ref,
        baudrate=baud,
        parity=parity,
        stopbits=stopbits,
        interval_s=interval,
        timeout_s=timeout,
        retries=retries,
        site=site,
    )


def check_modbus_buses(sensors: Iterable[object]) -> dict[str, list[ModbusSensorConfig]]:
    """Group Modbus sensors by port; refuse shared slave ids or disagreeing serial settings."""
    return group_buses(
        sensors,
        ModbusSensorConfig,
        address="slave",
        shared=("baudrate", "parity", "stopbits"),
        bus="bus",
        name_address=lambda slave: f"slave id {slave}",
    )
