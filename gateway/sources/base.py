"""What every source driver produces and where it sends it.

A driver turns wire traffic into ``Reading``s and hands each to a ``Sink``.
``Sink.submit`` returns only once the reading is durably committed to the log,
so a driver acknowledges its source (MQTT PUBACK, the next serial poll) only
after ``submit`` returns. Bad input never raises out of a driver: it is
reported through ``Sink.reject``, which counts and logs it, and the driver
carries on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Gap", "Reading", "Sink", "Source", "Value"]


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


class Sink(Protocol):
    async def submit(self, reading: Reading) -> bool:
        """Commit a reading; True if logged now, False if its dedup key was already logged."""
        ...

    async def submit_gap(self, gap: Gap) -> None:
        """Commit a gap record."""
        ...

    def reject(self, sensor: str, reason: str, detail: str) -> None:
        """Count and log input that was refused (``reason`` is a short stable label)."""
        ...


class Source(Protocol):
    name: str

    async def run(self, sink: Sink) -> None:
        """Read until cancelled, reconnecting as needed; never raises for bad input."""
        ...
