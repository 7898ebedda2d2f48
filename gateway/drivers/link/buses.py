"""Sensors that share one serial bus: one address each, one set of line settings."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from gateway.errors import ConfigError

__all__ = ["group_buses"]


class _OnPort(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def port(self) -> str: ...


S = TypeVar("S", bound=_OnPort)


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
