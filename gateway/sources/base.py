"""What a driver is to the daemon and to the technician's tools.

A ``Source`` reads its sensors until cancelled and hands each ``Reading`` to
a ``Sink`` (both in ``gateway.pipeline``); ``gateway probe`` and ``gateway
scan`` print a driver's ``ProbeResult`` and ``Found``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..pipeline import Reading, Sink

__all__ = ["Exchange", "Found", "ProbeResult", "Source"]


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
