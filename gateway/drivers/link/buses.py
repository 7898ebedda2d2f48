"""Sensors that share one serial bus: one address each, one set of line settings.

``bus_driver`` is the driver-table row of such a family (SDI-12 adapters,
Modbus buses): its buses are checked once the file is read, its source reads a
whole bus, and a sensor asked again after each timeout may be silent for all
its attempts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from gateway.drivers.base import Driver, SensorConfig
from gateway.errors import ConfigError

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.toml_table import Table

__all__ = ["bus_driver", "group_buses"]


class _OnPort(SensorConfig, Protocol):
    @property
    def port(self) -> str: ...


class _OnBus(_OnPort, Protocol):
    @property
    def timeout_s(self) -> float: ...

    @property
    def retries(self) -> int: ...


S = TypeVar("S", bound=_OnPort)
B = TypeVar("B", bound=_OnBus)


def bus_driver(
    home: str,
    config_type: type[B],
    parse: Callable[[Table, str, str | None], B],
    *,
    buses: Callable[[Iterable[object]], dict[str, list[B]]],
    scan_share: float,
) -> Driver[B]:
    """The row of a bus family: ``buses`` (a ``group_buses`` call) checks the file's
    buses; each sensor is read at its port and may be silent for all its attempts."""

    def check(config: GatewayConfig) -> None:
        buses(config.sensors)

    return Driver(
        home=home,
        config_type=config_type,
        parse=parse,
        scan_share=scan_share,
        check=check,
        grace_s=lambda s: s.timeout_s * (s.retries + 1),
        where=lambda s: s.port,
    )


def group_buses(
    sensors: Iterable[object],
    kind: type[S],
    *,
    address: str,
    shared: Sequence[str],
    bus: str,
    name_address: Callable[[Any], str] = repr,
) -> dict[str, list[S]]:
    """Group the ``kind`` sensors by ``port``.

    Refuses two sensors at one ``address`` on a port, and a sensor whose
    ``shared`` settings differ from the first one's on its port (the ``bus``
    word names the thing in the message: "bus", "adapter").
    """
    buses: dict[str, list[S]] = {}
    for s in sensors:
        if isinstance(s, kind):
            buses.setdefault(s.port, []).append(s)
    for port, members in buses.items():
        first = members[0]
        seen: dict[object, str] = {}
        for s in members:
            at = getattr(s, address)
            if at in seen:
                raise ConfigError(
                    f"sensor {s.id!r}.{address}",
                    f"{name_address(at)} on {port} is already sensor {seen[at]!r}",
                )
            seen[at] = s.id
            for key in shared:
                mine, theirs = getattr(s, key), getattr(first, key)
                if mine != theirs:
                    raise ConfigError(
                        f"sensor {s.id!r}.{key}",
                        f"{mine!r} differs from {theirs!r} of sensor "
                        f"{first.id!r} on the same {bus} {port}",
                    )
    return buses
