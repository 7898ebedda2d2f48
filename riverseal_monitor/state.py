"""What the monitor asks of its state beyond ``State`` (docs/monitor.md, "Several instances").

``State`` (state_sqlite.py) is the verification state every backend keeps.
``Leases`` is what a shared database adds so several monitor instances split
the boxes: a lease per box (owner instance, expiry on the database's clock),
and a channel to hand an announcement to the instance that owns its box.
``Display`` is what the page reads (riverseal_monitor.web): per station its
verdict and last alert, per sensor its series, the box's anchoring times and the
monitor's cosigned checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .anchors import AnchorMark
    from .follow import Alert

__all__ = [
    "ALERT_COLUMNS",
    "ANCHORS_SHOWN",
    "ANCHORS_SQL",
    "ANCHOR_UPSERT",
    "LEVELS",
    "SERIES_SCHEMA",
    "Display",
    "Leases",
    "alert_docs",
    "alert_values",
    "anchor_values",
    "level_of",
    "series_doc",
]

SERIES_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    origin      TEXT NOT NULL,
    idx         BIGINT NOT NULL,
    sensor      TEXT NOT NULL,
    time        TEXT NOT NULL,
    time_s      DOUBLE PRECISION NOT NULL,
    qc          TEXT NOT NULL,
    vals        TEXT NOT NULL,
    verified_s  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (origin, idx)
);
CREATE INDEX IF NOT EXISTS readings_series ON readings (origin, sensor, time_s);
CREATE TABLE IF NOT EXISTS gaps (
    origin      TEXT NOT NULL,
    idx         BIGINT NOT NULL,
    sensor      TEXT NOT NULL,
    start       TEXT NOT NULL,
    stop        TEXT NOT NULL,
    reason      TEXT NOT NULL,
    PRIMARY KEY (origin, idx)
);
CREATE TABLE IF NOT EXISTS anchors (
    origin      TEXT NOT NULL,
    checkpoint  BIGINT NOT NULL,
    backend     TEXT NOT NULL,
    state       TEXT NOT NULL,
    time_s      DOUBLE PRECISION,
    status      TEXT NOT NULL,
    seen_s      DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (origin, checkpoint, backend)
);
"""
"""The readings, gaps and anchors a monitor keeps for display: the same DDL in SQLite and
PostgreSQL (``IF NOT EXISTS``: a state made before a table existed gets it at the next start)."""

ANCHOR_UPSERT = (
    "INSERT INTO anchors (origin, checkpoint, backend, state, time_s, status, seen_s) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (origin, checkpoint, backend) DO UPDATE "
    "SET state = excluded.state, time_s = excluded.time_s, status = excluded.status"
)
"""One anchor read from a manifest (SQLite placeholders); a receipt that moved on (included
to final) replaces its row, ``seen_s`` stays when the monitor first saw it."""

ANCHORS_SHOWN = 200
"""Anchors per station in a series answer (the newest checkpoints)."""


def anchor_values(origin: str, marks: Iterable[AnchorMark], now: float) -> list[tuple[Any, ...]]:
    """Rows for ``ANCHOR_UPSERT``."""
    return [(origin, m.checkpoint, m.backend, m.state, m.time_s, m.status, now) for m in marks]


ALERT_COLUMNS = "origin, kind, key, sensor, entry, size, raised_s, cleared_s, message, detail"
"""What ``riverseal-monitor alerts`` reads of each alert, in the order ``alert_docs`` takes."""


def alert_values(a: Alert) -> tuple[Any, ...]:
    """An alert as the values of the columns origin, key, kind, sensor, entry, size,
    raised_s, message and detail (JSON), in that order."""
    detail = json.dumps(dict(a.detail), sort_keys=True)
    return (a.origin, a.key, a.kind, a.sensor, a.entry, a.size, a.time_s, a.message, detail)


def alert_docs(rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """Rows of ``ALERT_COLUMNS`` as the JSON documents of docs/monitor.md §4."""
    names = ("origin", "kind", "key", "sensor", "entry", "size", "time_s", "cleared_s", "message")
    return [
        {**dict(zip(names, row[:-1], strict=True)), "detail": json.loads(row[-1])} for row in rows
    ]


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

    async def cosigned(self, origin: str) -> str | None:
        """The last verified checkpoint of ``origin`` with the monitor's cosignature (None:
        not verified, or the monitor has no witness key)."""
        ...


def series_doc(
    readings: Iterable[Sequence[Any]],
    gaps: Iterable[Sequence[Any]],
    box: Sequence[Any] | None,
    anchors: Iterable[Sequence[Any]] = (),
) -> dict[str, Any]:
    """The page's JSON for one station from rows of (sensor, time_s, vals JSON),
    (sensor, start, stop, reason), (size, verified_s) and (checkpoint, backend, state,
    time_s, status) of ``ANCHORS_SQL``."""
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
    marks = [
        {
            "checkpoint": int(size),
            "backend": backend,
            "state": state,
            "time_s": None if time_s is None else float(time_s),
            "status": status,
        }
        for size, backend, state, time_s, status in anchors
    ]
    marks.sort(key=lambda m: (m["checkpoint"], m["backend"]))
    return {"sensors": sensors, "checkpoint": checkpoint, "anchors": marks}


ANCHORS_SQL = (
    "SELECT checkpoint, backend, state, time_s, status FROM anchors WHERE origin = ? "
    f"ORDER BY checkpoint DESC, backend LIMIT {ANCHORS_SHOWN}"
)
"""A station's newest anchors for ``series_doc`` (SQLite placeholders)."""
