"""What a driver is to the daemon and to the technician's tools.

A ``Driver`` is one row of the table in ``gateway.drivers``. Its ``Source``
reads its sensors until cancelled and hands each ``Reading`` to a ``Sink``
(both in ``gateway.pipeline``); ``gateway probe`` and ``gateway scan`` print
a driver's ``ProbeResult`` and ``Found``.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from gateway.pipeline import Reading, Sink

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.toml_table import Table

__all__ = [
    "Driver",
    "Exchange",
    "Found",
    "ProbeResult",
    "Scanner",
    "SensorConfig",
    "Source",
]


class SensorConfig(Protocol):
    """What every driver's ``[[sensor]]`` settings have (each a frozen dataclass)."""

    @property
    def id(self) -> str: ...

    @property
    def site(self) -> str | None: ...

    @property
    def interval_s(self) -> float: ...


C = TypeVar("C", bound=SensorConfig)

Scanner = Callable[[str, float], Awaitable[list["Found"]]]
"""``(port, budget_s)``: what a driver finds on one serial port within the budget."""


def _no_check(config: GatewayConfig) -> None:
    return None


def _no_grace(sensor: SensorConfig) -> float | None:
    return None


def _watched(sensor: SensorConfig) -> bool:
    return True


def _nowhere(sensor: SensorConfig) -> str:
    return ""


@dataclass(frozen=True, slots=True)
class Driver(Generic[C]):
    """One row of the driver table: everything the gateway dispatches on per family.

    The row names the family's home, its package ``gateway.drivers.<name>``;
    ``build``, ``probe`` and ``scan`` import the family's heavy modules from
    there only when called (so a box without MQTT sensors never imports the
    MQTT stack): ``<home>.source.build_sources``, ``<home>.tools.probe`` and
    ``<home>.tools.scan``, whose signatures are those of the methods below.
    """

    home: str
    """The family's package (``__name__`` in its ``__init__.py``); its last part is the
    driver's name."""
    config_type: type[C]
    """The frozen dataclass ``parse`` returns."""
    parse: Callable[[Table, str, str | None], C]
    """``(table, id, site)``: the driver's own keys of one ``[[sensor]]`` table."""
    scan_share: float = 0.0
    """The share of a port's ``gateway scan`` budget this driver gets; 0 for a
    non-serial family, which is never scanned (and has no ``tools.scan``)."""
    check: Callable[[GatewayConfig], None] = _no_check
    """Checks across sensors once the whole file is read (shared buses, needed sections)."""
    grace_s: Callable[[C], float | None] = _no_grace
    """Extra silence the daemon allows a sensor: the time its retries may take."""
    watched: Callable[[C], bool] = _watched
    """Whether the daemon watches a sensor for silence (an MQTT ``{id}`` template is not)."""
    where: Callable[[C], str] = _nowhere
    """Where a sensor is read, for ``gateway check``: its port, or its topic."""

    @property
    def name(self) -> str:
        """``driver = "<name>"`` in a ``[[sensor]]`` table: the family's folder name."""
        return self.home.rpartition(".")[2]

    def _entry(self, module: str, function: str) -> Any:
        return getattr(importlib.import_module(f"{self.home}.{module}"), function)

    def build(self, sensors: Sequence[C], config: GatewayConfig, device_id: str) -> list[Source]:
        """The sources that read all of this driver's ``sensors`` (one per circuit, per
        bus, or one for all)."""
        build: Callable[[Sequence[C], GatewayConfig, str], list[Source]]
        build = self._entry("source", "build_sources")
        return build(sensors, config, device_id)

    async def probe(self, sensor: C, config: GatewayConfig) -> ProbeResult:
        """``gateway probe``: one reading of one sensor, with the raw exchanges."""
        probe: Callable[[C, GatewayConfig], Awaitable[ProbeResult]]
        probe = self._entry("tools", "probe")
        return await probe(sensor, config)

    async def scan(self, port: str, budget_s: float) -> list[Found]:
        """``gateway scan``: devices of this family on ``port`` within ``budget_s``."""
        if not self.scan_share:
            raise TypeError(f"the {self.name} driver is not a serial family; nothing to scan")
        scan: Scanner = self._entry("tools", "scan")
        return await scan(port, budget_s)


class Source(Protocol):
    name: str

    async def run(self, sink: Sink) -> None:
        """Read until cancelled, reconnecting as needed; never raises for bad input."""
        ...


# --- what the technician's tools (``gateway probe``, ``gateway scan``) print ---------------


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request and its reply on the wire, as text a technician can read
    (non-printable bytes escaped; ``sent`` is empty for unsolicited lines)."""

    sent: str
    received: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """``gateway probe SENSOR``: the raw exchanges of one reading and what they parsed to."""

    sensor: str
    exchanges: tuple[Exchange, ...]
    reading: Reading | None
    error: str | None = None
    """Why no reading came back, in words a technician can act on."""


@dataclass(frozen=True, slots=True)
class Found:
    """``gateway scan``: one device found on a port, with a config snippet to paste."""

    port: str
    driver: str
    description: str
    snippet: str
    """A complete ``[[sensor]]`` TOML table for this device."""
