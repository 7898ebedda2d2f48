"""The pipeline's own types: what a driver hands over and where it sends it.

A driver turns wire traffic into ``Reading``s and hands each to a ``Sink``.
``Sink.submit`` returns only once the reading is durably committed to the log,
so a driver acknowledges its source (MQTT PUBACK, the next serial poll) only
after ``submit`` returns. Bad input never raises out of a driver: it is
reported through ``Sink.reject``, which counts and logs it, and the driver
carries on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "Event",
    "Gap",
    "Reading",
    "Sink",
    "Value",
]


@dataclass(frozen=True, slots=True)
class Value:
    quantity: str
    value: float
    unit: str


@dataclass(frozen=True, slots=True)
class Reading:
    sensor: str
    values: tuple[Value, ...]
    received_ns: int
    """Gateway receive time, ``time.time_ns()``."""
    sensor_time: str | None = None
    """The sensor's own timestamp, RFC 3339 UTC, when it gives one."""
    src_seq: int | None = None
    """The sensor's own message counter, when it has one."""
    raw: str | None = None
    """The exact text the sensor sent, for the record."""
    dedup_key: str | None = None
    """Unique per sensor; a reading whose key is already logged is not logged again."""


@dataclass(frozen=True, slots=True)
class Gap:
    """A signed statement that a sensor was silent or readings were lost."""

    sensor: str
    reason: str
    from_ns: int
    to_ns: int
    src_seq_from: int | None = None
    src_seq_to: int | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened to the box or a sensor: boot, config change, clock
    step, a probe identifying itself at start."""

    name: str
    time_ns: int
    detail: Mapping[str, Any] = field(default_factory=dict)


class Sink(Protocol):
    async def submit(self, reading: Reading) -> bool:
        """Commit a reading; True if logged now, False if its dedup key was already logged."""
        ...

    async def submit_gap(self, gap: Gap) -> None:
        """Commit a gap record."""
        ...

    async def submit_event(self, event: Event) -> None:
        """Commit an event record (e.g. ``sensor-info`` with what the probe said it is)."""
        ...

    def reject(self, sensor: str, reason: str, detail: str) -> None:
        """Count and log input that was refused (``reason`` is a short stable label)."""
        ...
