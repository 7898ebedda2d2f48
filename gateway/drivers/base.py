"""What a driver is to the daemon and to the technician's tools.

A ``Driver`` is one row of the table in ``gateway.drivers``. Its ``Source``
reads its sensors until cancelled and hands each ``Reading`` to a ``Sink``
(both in ``gateway.pipeline``); ``gateway probe`` and ``gateway scan`` print
a driver's ``ProbeResult`` and ``Found``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from gateway.pipeline import Reading, Sink

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.toml_table import Table

__all__ = ["Driver", "Exchange", "Found", "ProbeResult", "Scanner", "SensorConfig", "Source"]


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
    """One row of the driver table: everything the gateway dispatches on per family."""

    name: str
    """``driver = "<name>"`` in a ``[[sensor]]`` table."""
    config_type: type[C]
    """The frozen dataclass ``parse`` returns."""
    parse: Callable[[Table, str, str | None], C]
    """``(table, id, site)``: the driver's own keys of one ``[[sensor]]`` table."""
    build: Callable[[Sequence[C], GatewayConfig, str], list[Source]]
    """``(sensors, config, device_id)``: the sources that read all of this driver's sensors."""
    probe: Callable[[C, GatewayConfig], Awaitable[ProbeResult]]
    """``gateway probe``: one reading of one sensor, with the raw exchanges."""
    scan: Scanner | None = None
    """``gateway scan``: devices of this family on a port; None for non-serial drivers."""
    scan_share: float = 0.0
    """The share of a port's scan budget this driver gets."""
    check: Callable[[GatewayConfig], None] = _no_check
    """Checks across sensors once the whole file is read (shared buses, needed sections)."""
    grace_s: Callable[[C], float | None] = _no_grace
    """Extra silence the daemon allows a sensor: the time its retries may take."""
    watched: Callable[[C], bool] = _watched
    """Whether the daemon watches a sensor for silence (an MQTT ``{id}`` template is not)."""
    where: Callable[[C], str] = _nowhere
    """Where a sensor is read, for ``gateway check``: its port, or its topic."""


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
