"""What a verification found: the report, its failures, steps, anchors, sensors, the
timeline of the log and the verdict level (docs/bundle-format.md §9, §9.1, §11).

Plain frozen data with their JSON forms; ``ledger_client/verify.py`` fills them in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "LOCAL_STATUS",
    "MAX_KEPT_FAILURES",
    "NOTABLE_EVENTS",
    "STEPS",
    "UNCHECKED_STATUS",
    "VERIFIED_STATUS",
    "AnchorResult",
    "Failure",
    "Fork",
    "GapSpan",
    "Level",
    "RecordedBy",
    "Report",
    "SensorCounts",
    "StepResult",
    "TimelineEvent",
]

STEPS: tuple[str, ...] = (
    "keys",
    "record",
    "signature",
    "inclusion",
    "checkpoint",
    "consistency",
    "anchors",
    "completeness",
)
_STEP_NUMBER = {name: i for i, name in enumerate(STEPS, start=1)}

LOCAL_STATUS = "local, not independent"
UNCHECKED_STATUS = "present but unchecked (offline)"
VERIFIED_STATUS = "verified"

NOTABLE_EVENTS = frozenset(
    {"boot", "stop", "config", "history-reset", "key-rotation", "clock-step"}
)
"""Events whose detail the checklist keeps: they bound downtime, declare the sensors
expected, or change the log's history or keys (docs/bundle-format.md §4.2)."""

MAX_KEPT_FAILURES = 10_000
"""Failures kept in a report with their text; beyond it they are only counted, so a
garbage bundle of millions of entries cannot exhaust memory."""


@dataclass(frozen=True)
class Failure:
    """One thing that does not verify.

    ``entry`` is the log index of the entry at fault (or missing), ``checkpoint``
    the tree size of the checkpoint at fault; either or both may be None.
    """

    check: str
    reason: str
    entry: int | None = None
    checkpoint: int | None = None
    sensor: str | None = None
    """The sensor of the entry's record, when it could be read."""
    time: str | None = None
    """The record's time, when it could be read."""
    values: str | None = None
    """What the record says, for a person: ``ph 7.31 pH; temperature 12.4 Cel``,
    ``gap 10:00–10:05 (timeout)`` or ``event boot``."""

    def where(self) -> str:
        """The entry or checkpoint at fault, with what it says in domain terms."""
        if self.entry is None:
            return "" if self.checkpoint is None else f"checkpoint {self.checkpoint}"
        about = [p for p in (self.sensor, self.time, self.values) if p]
        return f"entry {self.entry}" + (f" ({', '.join(about)})" if about else "")

    def __str__(self) -> str:
        """The technical form: ``entry 17: signature: does not verify under key …``."""
        if self.entry is not None:
            return f"entry {self.entry}: {self.check}: {self.reason}"
        if self.checkpoint is not None:
            return f"checkpoint {self.checkpoint}: {self.check}: {self.reason}"
        return f"{self.check}: {self.reason}"

    def described(self) -> str:
        """For a person: what the entry says before the technical check, e.g.
        ``entry 17 (ph-1, 2026-03-01T10:00:00.000000Z, ph 7.31 pH): signature: …``."""
        where = self.where()
        return f"{where}: {self.check}: {self.reason}" if where else f"{self.check}: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        return {
            "entry": self.entry,
            "checkpoint": self.checkpoint,
            "sensor": self.sensor,
            "time": self.time,
            "values": self.values,
            "check": self.check,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class StepResult:
    """How one step went: ``passed`` items (keys, entries, checkpoints, ...) and
    ``failed`` problems found. ``skipped`` items could not be checked because an
    earlier step already failed them (an entry whose record does not parse has no
    signature to check)."""

    number: int
    name: str
    passed: int
    failed: int
    skipped: int = 0

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.number,
            "name": self.name,
            "ok": self.ok,
            "passed": self.passed,
            "failed": self.failed,
            "skipped": self.skipped,
        }


@dataclass(frozen=True)
class AnchorResult:
    """The outcome for one anchor receipt. ``status`` is LOCAL_STATUS,
    UNCHECKED_STATUS, VERIFIED_STATUS, or ``failed: <reason>``; a verified
    one carries the ledger's time and what was confirmed."""

    checkpoint: int
    backend: str
    state: str
    status: str
    time: str | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return not self.status.startswith("failed")

    @property
    def verified(self) -> bool:
        return self.status == VERIFIED_STATUS

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "checkpoint": self.checkpoint,
            "backend": self.backend,
            "state": self.state,
            "status": self.status,
            "ok": self.ok,
        }
        if self.time is not None:
            doc["time"] = self.time
        if self.detail is not None:
            doc["detail"] = self.detail
        return doc


@dataclass(frozen=True)
class RecordedBy:
    """Entries ``first``–``last`` were recorded no later than ``time``: the earliest
    independently verified anchor of a checkpoint that covers them."""

    first: int
    last: int
    time: str
    backend: str

    def to_json(self) -> dict[str, Any]:
        return {"first": self.first, "last": self.last, "time": self.time, "backend": self.backend}


@dataclass(frozen=True)
class SensorCounts:
    """One sensor's records in the bundle (those that passed step 2)."""

    readings: int = 0
    gaps: int = 0
    first: str | None = None
    """The earliest and latest reading times (27-character UTC), None without readings."""
    last: str | None = None
    unsynced: int = 0
    """Readings and gaps made while the gateway clock was not synced."""
    qc: Mapping[str, int] = field(default_factory=dict)
    """Values per aggregate QC flag digit (``{"1": 1410, "3": 2}``), over every value of
    every reading; values without ``qc`` are not counted."""
    late: int = 0
    """Readings whose src_seq arrived after a higher one of their run (accepted, 8 d)."""
    gap_spans: tuple[GapSpan, ...] = ()
    """The sensor's gaps, merged: consecutive gap records with the same reason whose spans
    touch or overlap are one span; at most MAX_GAP_SPANS."""
    gap_spans_more: int = 0
    """Spans beyond MAX_GAP_SPANS, counted."""

    def to_json(self) -> dict[str, Any]:
        return {
            "readings": self.readings,
            "gaps": self.gaps,
            "first": self.first,
            "last": self.last,
            "unsynced": self.unsynced,
            "qc": dict(self.qc),
            "late": self.late,
            "gap_spans": [g.to_json() for g in self.gap_spans],
            "gap_spans_more": self.gap_spans_more,
        }


class Level(StrEnum):
    """The verdict: exactly what was proven (docs/bundle-format.md §9.1).

    From the strongest claim down; a source gets the first level whose conditions hold,
    read from the bottom: a proven fork, else any failure, else keys the regulator
    did not supply, else no anchor checked independently, else VERIFIED.
    """

    VERIFIED = "verified"
    """No failure; keys from the regulator's trust file; at least one anchor receipt
    checked against an independent ledger (online, or a TSA token against roots)."""
    AUTHENTIC_UNDATED = "authentic-undated"
    """No failure and trusted keys, but no anchor checked independently: authentic and
    complete as far as the box's own signatures go; when it was recorded rests on the
    box's clock."""
    UNTRUSTED_KEY = "untrusted-key"
    """No failure, but the keys came from the bundle itself: anyone could have made it."""
    FAILED = "failed"
    """At least one failure."""
    FORKED = "forked"
    """Two validly signed checkpoints of this log cannot both be prefixes of one history:
    proof that the box (or its key) signed two histories."""

    @property
    def headline(self) -> str:
        return _HEADLINES[self]


_HEADLINES = {
    Level.VERIFIED: "VERIFIED",
    Level.AUTHENTIC_UNDATED: "AUTHENTIC, NOT INDEPENDENTLY DATED",
    Level.UNTRUSTED_KEY: "UNTRUSTED KEY",
    Level.FAILED: "FAILED",
    Level.FORKED: "FORKED HISTORY",
}


@dataclass(frozen=True)
class Fork:
    """Two signed checkpoints that cannot both be prefixes of one log, with the notes
    themselves: each valid under the keys in force, so together they prove the box (or
    whoever holds its key) signed two different histories."""

    size_a: int
    note_a: str
    source_a: str
    size_b: int
    note_b: str
    source_b: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "a": {"size": self.size_a, "source": self.source_a, "note": self.note_a},
            "b": {"size": self.size_b, "source": self.source_b, "note": self.note_b},
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Report:
    """What the checklist found. ``ok``: no failure at all; ``level``: what was proven
    (``verified`` only for Level.VERIFIED)."""

    entries: int
    failures: tuple[Failure, ...]
    steps: tuple[StepResult, ...]
    origin: str
    device: str
    keys_trusted: bool
    keys: tuple[str, ...]
    ignored_keys: tuple[str, ...]
    sensors: Mapping[str, SensorCounts]
    events: int
    first_index: int | None
    last_index: int | None
    first_time: str | None
    last_time: str | None
    checkpoints: tuple[int, ...]
    anchors: tuple[AnchorResult, ...]
    notes: tuple[str, ...]
    checked_at: str
    recorded_by: tuple[RecordedBy, ...] = ()
    failure_count: int = -1
    """All failures found; ``failures`` lists at most MAX_KEPT_FAILURES of them."""
    forks: tuple[Fork, ...] = ()
    """Proven forks (each is also a failure)."""
    linked: tuple[str, ...] = ()
    """Earlier checkpoints (--since-checkpoint, --previous) this source was proven to
    extend, described."""
    newest_note: str | None = None
    """The signed note of the newest checkpoint that opened under the keys in force:
    what a regulator keeps to link the next bundle (§9.2)."""
    timeline: tuple[TimelineEvent, ...] = ()
    """Notable events (boots, stops, configuration changes, key rotations, history
    resets, clock steps), in log order; at most MAX_TIMELINE (a note counts the rest)."""

    def __post_init__(self) -> None:
        if self.failure_count < 0:
            object.__setattr__(self, "failure_count", len(self.failures))

    @property
    def ok(self) -> bool:
        """No failure at all (whatever the level)."""
        return self.failure_count == 0

    @property
    def independently_dated(self) -> bool:
        return any(a.verified for a in self.anchors)

    @property
    def level(self) -> Level:
        if self.forks:
            return Level.FORKED
        if not self.ok:
            return Level.FAILED
        if not self.keys_trusted:
            return Level.UNTRUSTED_KEY
        if not self.independently_dated:
            return Level.AUTHENTIC_UNDATED
        return Level.VERIFIED

    @property
    def verified(self) -> bool:
        """Everything proven: Level.VERIFIED."""
        return self.level is Level.VERIFIED

    def step(self, name: str) -> StepResult:
        return self.steps[_STEP_NUMBER[name] - 1]

    def to_json(self) -> dict[str, Any]:
        return {
            "verified": self.verified,
            "level": self.level.value,
            "verdict": self.level.headline,
            "entries": self.entries,
            "origin": self.origin,
            "device": self.device,
            "keys_trusted": self.keys_trusted,
            "keys": list(self.keys),
            "ignored_keys": list(self.ignored_keys),
            "first_index": self.first_index,
            "last_index": self.last_index,
            "first_time": self.first_time,
            "last_time": self.last_time,
            "checkpoints": list(self.checkpoints),
            "steps": [s.to_json() for s in self.steps],
            "sensors": {name: c.to_json() for name, c in sorted(self.sensors.items())},
            "events": self.events,
            "anchors": [a.to_json() for a in self.anchors],
            "recorded_by": [r.to_json() for r in self.recorded_by],
            "notes": list(self.notes),
            "checked_at": self.checked_at,
            "linked": list(self.linked),
            "forks": [f.to_json() for f in self.forks],
            "failure_count": self.failure_count,
            "failures": [f.to_json() for f in self.failures],
            "timeline": [t.to_json() for t in self.timeline],
        }


@dataclass(frozen=True)
class GapSpan:
    """Consecutive gap records of one sensor with the same reason whose spans touch or
    overlap, merged: from ``start`` to ``end`` (27-character UTC times)."""

    start: str
    end: str
    reason: str
    records: int

    def to_json(self) -> dict[str, Any]:
        return {"from": self.start, "to": self.end, "reason": self.reason, "records": self.records}


@dataclass(frozen=True)
class TimelineEvent:
    """A notable event of the log, for the report: ``event`` is ``boot``, ``stop``,
    ``config``, ``key-rotation``, ``history-reset`` or ``clock-step``."""

    index: int
    time: str
    event: str
    previous_stop: str | None = None
    """boot: how the run before it ended, ``clean`` or ``unclean`` (None: the log's first
    boot, or a boot that does not say)."""
    previous_time: str | None = None
    """boot: the time of the entry before it (the last of the run before)."""
    downtime_s: float | None = None
    """boot: seconds from ``previous_time`` to the boot."""
    watched: int | None = None
    """boot and config: how many sensors it declares (None: it declares none in a form
    the verifier reads, e.g. a boot written before sensors were declared)."""
    added: tuple[str, ...] = ()
    """config: the sensors added, removed, and whose expectations changed (at most 100
    of each)."""
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    cause: str | None = None
    """stop: its ``cause`` (``clean``)."""

    def describe(self) -> str:
        """One line for a person, e.g. ``boot after an unclean stop, down 3 h 2 min``."""
        if self.event == "boot":
            if self.previous_stop is None:
                text = "boot"
            else:
                article = "an" if self.previous_stop[:1] in "aeiou" else "a"
                text = f"boot after {article} {self.previous_stop} stop"
            if self.downtime_s is not None:
                text += f", down {_duration(self.downtime_s)} (since {self.previous_time})"
            if self.watched is not None:
                text += f", {self.watched} sensor(s) watched"
            return text
        if self.event == "stop":
            return f"stop ({self.cause})" if self.cause else "stop"
        if self.event == "config":
            parts = [
                f"{what} {', '.join(names)}"
                for what, names in (
                    ("added", self.added),
                    ("removed", self.removed),
                    ("changed", self.changed),
                )
                if names
            ]
            return "sensors changed: " + ("; ".join(parts) or "no difference listed")
        return self.event

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"index": self.index, "time": self.time, "event": self.event}
        if self.event == "boot":
            doc["previous_stop"] = self.previous_stop
            doc["previous_time"] = self.previous_time
            doc["downtime_s"] = self.downtime_s
            doc["watched"] = self.watched
        elif self.event == "config":
            doc["watched"] = self.watched
            doc["added"] = list(self.added)
            doc["removed"] = list(self.removed)
            doc["changed"] = list(self.changed)
        elif self.event == "stop":
            doc["cause"] = self.cause
        return doc


def _duration(seconds: float) -> str:
    """``12 s``, ``4 min 10 s``, ``3 h 2 min``, ``2 d 5 h``: a silence, for a person."""
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"
