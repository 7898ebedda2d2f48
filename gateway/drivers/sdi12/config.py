"""``driver = "sdi12"``: one sonde (one address) behind a USB SDI-12 adapter.

Several sondes on one adapter are several ``[[sensor]]`` tables with the same
``port``; the gateway opens the port once and polls them in turn. The
adapter-wide settings (``baudrate``, ``terminator``, ``open_delay_s``) must then
agree, and no two of them may share an address: ``check_sdi12_buses`` says so.

Example::

    [[sensor]]
    id = "sonde-1"
    driver = "sdi12"
    port = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A1B2C3-if00-port0"
    address = "1"
    command = "MC"            # M, MC, C or CC, optionally with an index 1-9
    quantities = [["temperature", "Cel"], ["conductivity", "uS/cm"], ["ph", "pH"]]
    interval_s = 60.0
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from gateway.drivers.link.buses import group_buses
from gateway.errors import ConfigError
from gateway.toml_table import Table, positive

__all__ = [
    "SDI12_ADDRESSES",
    "SDI12_COMMANDS",
    "SDI12_TERMINATORS",
    "Sdi12SensorConfig",
    "Terminator",
    "check_sdi12_buses",
    "parse_sdi12",
]

SDI12_ADDRESSES = string.digits + string.ascii_uppercase + string.ascii_lowercase
SDI12_COMMANDS = ("M", "MC", "C", "CC")
"""Each may carry an index 1-9 (``M1``, ``CC3``): the sonde's additional measurement sets."""
Terminator = Literal["none", "cr", "lf", "crlf"]
SDI12_TERMINATORS: Mapping[Terminator, str] = {"none": "", "cr": "\r", "lf": "\n", "crlf": "\r\n"}
"""What the adapter wants after each command: Dr. Liu's takes none, some want CR."""


@dataclass(frozen=True)
class Sdi12SensorConfig:
    id: str
    port: str
    address: str
    quantities: tuple[tuple[str, str], ...]
    """(quantity, unit) for each value the measurement returns, in order."""
    command: str = "M"
    interval_s: float = 60.0
    timeout_s: float = 1.0
    """Per attempt: how long to wait for the adapter's reply line (covers the
    adapter's own break, wake-up and on-wire retries at 1200 baud)."""
    retries: int = 2
    """Extra attempts after a timeout or an invalid reply (spec §7.2: the whole
    break-and-command sequence is repeated at least two more times)."""
    baudrate: int = 9600
    """Adapter's USB-serial speed (the SDI-12 side is always 1200 baud)."""
    terminator: Terminator = "none"
    open_delay_s: float = 2.5
    """Wait after opening the port: Arduino-based adapters reset on open."""
    site: str | None = None
    driver: Literal["sdi12"] = "sdi12"

    @property
    def terminator_bytes(self) -> bytes:
        return SDI12_TERMINATORS[self.terminator].encode("ascii")


def _command_ok(text: str) -> bool:
    base, index = (text[:-1], text[-1]) if text[-1:].isdigit() else (text, "")
    return base in SDI12_COMMANDS and (index == "" or index in "123456789")


def _quantities(t: Table) -> tuple[tuple[str, str], ...]:
    raw: Any = t.get("quantities", list, required=True)
    where = f"{t.where}.quantities"
    if not raw:
        raise ConfigError(where, "must list at least one [quantity, unit] pair")
    if len(raw) > 99:
        raise ConfigError(where, f"lists {len(raw)} values; a measurement returns at most 99")
    pairs: list[tuple[str, str]] = []
    for i, item in enumerate(raw):
        ok = (
            isinstance(item, list)
            and len(item) == 2
            and all(isinstance(x, str) and x and x.isprintable() for x in item)
        )
        if not ok:
            raise ConfigError(
                f"{where}[{i}]", f"{item!r} is not a [quantity, unit] pair of non-empty strings"
            )
        pairs.append((item[0], item[1]))
    names = [q for q, _ in pairs]
    duplicates = sorted({q for q in names if names.count(q) > 1})
    if duplicates:
        raise ConfigError(where, f"names {duplicates} more than once")
    return tuple(pairs)


def parse_sdi12(t: Table, sid: str, site: str | None) -> Sdi12SensorConfig:
    d = Sdi12SensorConfig(id="", port="", address="0", quantities=())
    address = t.get("address", str, required=True)
    t.check(
        "address", address, lambda a: len(a) == 1 and a in SDI12_ADDRESSES, "is not 0-9, A-Z or a-z"
    )
    command = t.get("command", str, d.command)
    t.check("command", command, _command_ok, f"is not one of {SDI12_COMMANDS} (+ index 1-9)")
    quantities = _quantities(t)
    if command.startswith("M") and len(quantities) > 9:
        t.problem("quantities", "an M measurement returns at most 9 values; use C or CC")
    terminator = t.one_of(
        "terminator", t.get("terminator", str, d.terminator), get_args(Terminator)
    )
    retries = t.get("retries", int, d.retries)
    open_delay = t.get("open_delay_s", float, d.open_delay_s)
    return Sdi12SensorConfig(
        id=sid,
        port=t.get("port", str, required=True),
        address=address,
        quantities=quantities,
        command=command,
        interval_s=t.check(
            "interval_s",
            t.get("interval_s", float, d.interval_s),
            lambda x: x >= 1.0,
            "must be >= 1 s",
        ),
        timeout_s=t.check(
            "timeout_s", t.get("timeout_s", float, d.timeout_s), positive, "must be > 0"
        ),
        retries=t.check("retries", retries, lambda r: 0 <= r <= 10, "must be 0-10"),
        baudrate=t.check("baudrate", t.get("baudrate", int, d.baudrate), positive, "must be > 0"),
        terminator=terminator,
        open_delay_s=t.check("open_delay_s", open_delay, lambda x: x >= 0, "must be >= 0"),
        site=site,
    )


def check_sdi12_buses(sensors: Iterable[object]) -> dict[str, list[Sdi12SensorConfig]]:
    """Group SDI-12 sensors by port; refuse shared addresses or disagreeing adapter settings."""
    return group_buses(
        sensors,
        Sdi12SensorConfig,
        address="address",
        shared=("baudrate", "terminator", "open_delay_s"),
        bus="adapter",
    )
