"""What the monitor asks of its state beyond ``State`` (docs/monitor.md, "Several instances").

``State`` (state_sqlite.py) is the verification state every backend keeps.
``Leases`` is what a shared database adds so several monitor instances split
the boxes: a lease per box (owner instance, expiry on the database's clock),
and a channel to hand an announcement to the instance that owns its box.
``Display`` is what the page reads (riverseal_monitor.web): per station its
verdict and last alert, per sensor its series.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ["LEVELS", "Display", "Leases", "level_of", "series_doc"]

LEVELS = ("FAILED", "ALERT", "VERIFIED", "PENDING")
"""A station's verdict on the page, worst first (docs/monitor.md, "The page")."""


def level_of(verified_size: int, open_kinds: Sequence[str]) -> str:
    """FAILED: an open fork or forged alert; ALERT: another open alert; VERIFIED:
    entries verified and nothing open; PENDING: nothing verified yet."""
    if any(k in ("fork", "forged") for k in open_kinds):
        return "FAILED"
    if open_kinds:
        return "ALERT"
    return "VERIFIED" if verified_size > 0 else "PENDING"


@runtime_checkable
class Leases(Protocol):
    """Box ownership shared by the instances of one monitor (a database's job)."""

    async def claim(self, origins: Sequence[str], owner: str, lease_s: float) -> set[str]:
        """Renew ``owner``'s leases, take free or expired ones up to a fair share of
        ``origins`` (their number over the live instances, rounded up), give back any
        beyond it; the origins ``owner`` now holds until ``lease_s`` from now."""
        ...

    async def release(self, owner: str) -> None:
        """Give up every lease of ``owner`` (a clean stop: others take over at once)."""
        ...

    async def forward(self, note: str) -> None:
        """Hand an announced checkpoint note to whichever instance owns its box."""
        ...

    def forwarded(self) -> AsyncIterator[str]:
        """The notes other instances forward (every instance hears every one)."""
        ...

    async def last_readings(self, origin: str) -> tuple[dict[str, float], float]:
        """Per sensor the newest verified reading's time, and the newest of all (the box's
        clock): what a follower taking a box over needs to judge silence."""
        ...


@runtime_checkable
class Display(Protocol):
    """What the page shows, read from the state."""

    async def stations(self) -> list[dict[str, Any]]:
        """Per box: origin, verified size and time, open alert kinds, the last alert."""
        ...

    async def series(self, origin: str, after: float, limit: int) -> dict[str, Any]:
        """Readings (time, value, QC flag), gaps and anchoring of ``origin`` newer than
        ``after`` (seconds, the box's clock), at most ``limit`` per sensor (the newest)."""
        ...


def series_doc(
    readings: Iterable[Sequence[Any]], gaps: Iterable[Sequence[Any]], box: Sequence[Any] | None
) -> dict[str, Any]:
    """The page's JSON for one station from rows of (sensor, time_s, vals JSON),
    (sensor, start, stop, reason) and (size, verified_s)."""
    sensors: dict[str, dict[str, Any]] = {}
    for sensor, time_s, vals in readings:
        s = sensors.setdefault(str(sensor), {"points": [], "gaps": []})
        for quantity, unit, value, flag in json.loads(vals):
            s.setdefault("unit", f"{quantity} [{unit}]")
            s["points"].append([float(time_s), value, flag])
            break  # the first value of a reading is the one charted
    for sensor, start, stop, reason in gaps:
        s = sensors.setdefault(str(sensor), {"points": [], "gaps": []})
        s["gaps"].append({"start": start, "end": stop, "reason": reason})
    checkpoint = None if box is None else {"size": int(box[0]), "verified_s": float(box[1])}
    return {"sensors": sensors, "checkpoint": checkpoint}
