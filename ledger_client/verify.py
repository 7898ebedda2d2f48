"""The bundle verifier: a fixed, numbered, fail-closed checklist.

``verify_bundle`` is pure: it takes a parsed ``Bundle``, the keys to trust and
the verification time, does no IO, never raises for anything a bundle holds,
and returns a ``Report``. It does not stop at the first problem: every failure
is collected, each naming the entry (or checkpoint), the check and the reason.

The steps, in order (docs/bundle-format.md §9 is the normative list):

1. keys          parse the bundle's device keys; trust the trust list if given,
                 else the bundle's own keys (reported as NOT independently trusted)
2. record        each entry is a canonical, well-formed record of this device
                 at the index the bundle puts it
3. signature     Ed25519 by the key the record names, at a time inside its window
4. inclusion     the entry's leaf hash and inclusion proof lead to the root of
                 the checkpoint it names, the smallest one that covers it
5. checkpoint    every checkpoint is signed by a trusted key, has this origin,
                 and the sizes strictly ascend
6. consistency   each consecutive pair of checkpoints is linked by a valid proof
7. anchors       each receipt commits to its checkpoint's digest; "local" ones
                 are checked offline; others are confirmed by an AnchorChecker
                 (the regulator's own node, TSA roots) when one is given, and
                 are otherwise reported as present but unchecked, never verified
8. completeness  indexes are contiguous; every entry lies below the largest
                 checkpoint; per sensor, ``seq`` steps by one, every ``src_seq``
                 number skipped is logged (late is fine) or declared lost by a
                 gap record, and no declared sensor is silent without a gap record

A bundle verifies when no step has a failure.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

import nacl.signing

from .anchors import AnchorChecker
from .bundle import AnchorReceipt, Bundle, ConsistencyProof, DeviceKey
from .checkpoint import Checkpoint
from .errors import LedgerClientError, MalformedProof, ProofError, RecordError
from .lineage import KeptCheckpoint, Lineage, SignedCheckpoint
from .merkle import HASH_SIZE, verify_consistency, verify_inclusion
from .note import Verifier, open_note, split_note
from .records import Entry, parse_entry, parse_time
from .trust import TrustedKey, TrustList

__all__ = [
    "LOCAL_STATUS",
    "MAX_KEPT_FAILURES",
    "STEPS",
    "UNCHECKED_STATUS",
    "VERIFIED_STATUS",
    "AnchorResult",
    "BundleHeader",
    "Checklist",
    "EntryChecker",
    "EntryContext",
    "EntryObserver",
    "EntryOutcome",
    "Failure",
    "Fork",
    "GapSpan",
    "Level",
    "RecordedBy",
    "Report",
    "SensorCounts",
    "StepResult",
    "TimelineEvent",
    "verify_bundle",
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
KNOWN_BACKEND_FAMILIES = ("evm:", "rfc3161:")
"""Label prefixes of the independent backends (docs/bundle-format.md §7); an anchor
of any other kind fails rather than passing as "unchecked"."""


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

    ok: bool
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


class _Rec(NamedTuple):
    """What step 8 and the summary need of a parsed record."""

    index: int  # type: ignore[assignment]  # the record's own index (shadows tuple.index)
    kind: str
    sensor: str | None
    seq: int | None
    src_seq: int | None
    src_range: tuple[int, int] | None
    time_key: str  # the time in the fixed 27-character form, which sorts chronologically
    time: str
    synced: bool
    extra: Any
    """By kind: a reading's QC flags, one digit per value (``-`` for a value without
    ``qc``); a gap's (reason, from, to), times as sortable keys; an event's (name,
    detail), the detail only for the events the report explains (NOTABLE_EVENTS)."""
    values: tuple[tuple[str, str, float | None, int | None], ...] | None
    """A reading's (quantity, unit, value, QC flag) per value, only when the checklist
    was asked for them (CSV and HTML reports); else None."""
    seconds: float
    """The time as seconds since 1970 (step 8 f measures silences with it)."""


_fromiso = datetime.fromisoformat


def _time_key(text: str) -> str:
    """``text`` (already valid) as YYYY-MM-DDTHH:MM:SS.ffffffZ, which sorts by time."""
    if len(text) == 27:  # the form writers use: nothing to do
        return text
    return _standard_time(parse_time(text))


def _standard_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _CheckpointInfo:
    position: int
    checkpoint: Checkpoint
    trusted: bool


@dataclass
class _Tally:
    passed: int = 0
    skipped: int = 0


class EntryObserver(Protocol):
    """Sees each entry as the checklist takes it, in log order: ``rec`` is the compact
    record (a _Rec or its plain tuple, None if unreadable) with its values, and ``ok``
    says steps 2–4 found nothing wrong with it so far (completeness and the tree may
    still fail it: the final word is the Report's failures)."""

    def entry(self, index: int, rec: tuple[Any, ...] | None, ok: bool) -> None: ...


class BundleHeader(Protocol):
    """What the checklist reads of a bundle besides its entries (a v1 Bundle, a v1
    stream's header or a v2 manifest all have it)."""

    @property
    def origin(self) -> str: ...
    @property
    def device(self) -> str: ...
    @property
    def keys(self) -> Sequence[DeviceKey]: ...
    @property
    def checkpoints(self) -> Sequence[str]: ...
    @property
    def anchors(self) -> Sequence[AnchorReceipt]: ...


_sha256 = hashlib.sha256

MAX_KEPT_FAILURES = 10_000
"""Failures kept in a report with their text; beyond it they are only counted, so a
garbage bundle of millions of entries cannot exhaust memory."""


@dataclass
class _Run:
    header: BundleHeader
    now: datetime
    failures: list[Failure] = field(default_factory=list)
    failure_count: int = 0
    by_step: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STEPS, 0))
    tally: dict[str, _Tally] = field(default_factory=lambda: {s: _Tally() for s in STEPS})
    notes: list[str] = field(default_factory=list)
    # step 1
    keys: dict[str, list[TrustedKey]] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)  # key id -> vkey
    keys_trusted: bool = False
    # step 5
    checkpoints: dict[int, _CheckpointInfo] = field(default_factory=dict)
    sizes: list[int] = field(default_factory=list)
    same_size: list[tuple[tuple[int, int], tuple[int, int]]] = field(default_factory=list)
    """Pairs of signed checkpoints ((position, size), (position, size)) of one size
    with different roots."""
    forks: list[Fork] = field(default_factory=list)
    entries: int = 0

    def fail(
        self,
        check: str,
        reason: str,
        entry: int | None = None,
        checkpoint: int | None = None,
        about: tuple[str | None, str | None, str | None] | None = None,
    ) -> None:
        self.failure_count += 1
        if len(self.failures) < MAX_KEPT_FAILURES:
            if about is None:
                self.failures.append(Failure(check, reason, entry, checkpoint))
            else:
                self.failures.append(Failure(check, reason, entry, checkpoint, *about))
        self.by_step[check] += 1

    def passed(self, check: str, n: int = 1) -> None:
        self.tally[check].passed += n

    def entry_context(self, *, proofs: bool, values: bool = False) -> EntryContext:
        """What a worker needs to check entries on its own (picklable)."""
        keys = {
            kid: tuple(
                (v.name, v.key_id, v.public_key, k.valid_from, k.valid_until)
                for k in ks
                for v in (k.verifier,)
            )
            for kid, ks in self.keys.items()
        }
        cps = {
            size: (info.checkpoint.root, info.trusted) for size, info in self.checkpoints.items()
        }
        return EntryContext(
            keys, frozenset(self.ignored), self.header.device, cps if proofs else {}, values
        )


# --- steps 2, 3 (and 4 for v1 proofs): per entry, anywhere --------------------------------


@dataclass(frozen=True)
class EntryContext:
    """Steps 2–4 for one entry need only this: the keys in force, the device id and,
    for per-entry inclusion proofs, the checkpoints' roots. It crosses to worker
    processes as plain data."""

    # key ID -> (name, key ID, public key, valid from, valid until) of each key in force
    keys: Mapping[str, tuple[tuple[str, bytes, bytes, datetime | None, datetime | None], ...]]
    ignored: frozenset[str]
    device: str
    checkpoints: Mapping[int, tuple[bytes, bool]]  # size -> (root, signature trusted)
    values: bool = False  # carry each reading's values back (for CSV and HTML reports)

    def checker(self) -> EntryChecker:
        return EntryChecker(self)


class EntryOutcome(NamedTuple):
    """The result of steps 2–4 for one entry, small enough to send between processes.

    ``failures`` are (step, reason) pairs; ``rec`` is None when the record did
    not parse; ``signed`` is None when the signature step was skipped.
    """

    index: int  # type: ignore[assignment]  # the entry's position in the log
    leaf: bytes
    rec: _Rec | None
    record_ok: bool
    signed: bool | None
    included: bool | None
    failures: tuple[tuple[str, str], ...]
    about: tuple[str | None, str | None, str | None] | None = None
    """With failures: the sensor, time and values of the record, as far as it can be
    read (even a record that fails step 2), for the report."""


class EntryChecker:
    """Steps 2 and 3 (and 4, given proofs) over entries, with no shared state."""

    def __init__(self, ctx: EntryContext) -> None:
        self.ctx = ctx
        self.keys = {
            kid: [
                TrustedKey(Verifier(name, key, pub, nacl.signing.VerifyKey(pub)), start, end)
                for name, key, pub, start, end in entries
            ]
            for kid, entries in ctx.keys.items()
        }
        self.sizes = sorted(ctx.checkpoints)
        # Key IDs with exactly one key and no validity window: a signature that
        # verifies under it needs no further thought.
        # Key IDs with exactly one key: its window as 27-character times, which compare
        # as the instants they name (the form writers use, so the usual record needs
        # no date parsing to be placed in the window).
        self._single = {
            kid: (ks[0].verifier, _bound(ks[0].valid_from), _bound(ks[0].valid_until))
            for kid, ks in self.keys.items()
            if len(ks) == 1
        }

    def check(
        self,
        index: int,
        raw: bytes,
        named: int | None = None,
        proof: Sequence[bytes] | None = None,
    ) -> EntryOutcome:
        leaf = _sha256(b"\x00" + raw).digest()
        if named is None:
            # The usual case, kept lean: a well-formed record of this device at its
            # index, signed by the one key of its key ID (no validity window).
            try:
                e: Entry | None = parse_entry(raw)
            except LedgerClientError:
                e = None
            if e is not None:
                rec = e.rec
                one = self._single.get(rec["key"])
                time = rec["time"]
                if (
                    one is not None
                    and len(time) == 27
                    and (one[1] is None or time >= one[1])
                    and (one[2] is None or time <= one[2])
                    and rec["index"] == index
                    and rec["device"] == self.ctx.device
                    and one[0].verify(e.signed, e.signature)
                ):
                    return _tuple_new(
                        EntryOutcome,
                        (index, leaf, _compact(rec, self.ctx.values), True, True, None, (), None),
                    )
        return self._check_fully(index, raw, leaf, named, proof)

    def _check_fully(
        self,
        index: int,
        raw: bytes,
        leaf: bytes,
        named: int | None,
        proof: Sequence[bytes] | None,
    ) -> EntryOutcome:
        failures: list[tuple[str, str]] = []
        rec_c: _Rec | None = None
        record_ok = False
        signed: bool | None = None
        try:
            entry: Entry | None = parse_entry(raw)
        except LedgerClientError as exc:
            failures.append(("record", str(exc)))
            entry = None
        if entry is not None:
            rec = entry.rec
            record_ok = True
            if rec["index"] != index:
                failures.append(("record", f"the record says index {rec['index']}"))
                record_ok = False
            if rec["device"] != self.ctx.device:
                failures.append(
                    (
                        "record",
                        f"the record is from device {rec['device']!r}, not {self.ctx.device!r}",
                    )
                )
                record_ok = False
            rec_c = _compact(rec, self.ctx.values)
            signed = self._signature(entry, failures)
        included = None
        if named is not None and proof is not None:
            included = self._inclusion(index, named, leaf, proof, failures)
        if not failures:
            return EntryOutcome(index, leaf, rec_c, record_ok, signed, included, ())
        return EntryOutcome(
            index,
            leaf,
            rec_c,
            record_ok,
            signed,
            included,
            tuple(failures),
            _about(entry.rec if entry is not None else _lenient_record(raw)),
        )

    def _signature(self, entry: Entry, failures: list[tuple[str, str]]) -> bool:
        kid = entry.rec["key"]
        candidates = self.keys.get(kid)
        if candidates is None:
            why = (
                "which is not in the trust list" if kid in self.ctx.ignored else "which is unknown"
            )
            failures.append(("signature", f"signed with key {kid}, {why}"))
            return False
        # Usually one candidate; several only if 4-byte key IDs collide.
        signers = [k for k in candidates if k.verifier.verify(entry.signed, entry.signature)]
        if not signers:
            failures.append(("signature", f"does not verify under key {kid}"))
            return False
        time = entry.rec["time"]
        if not any(_covers(k, time) for k in signers):
            failures.append(
                (
                    "signature",
                    f"record time {time} is outside the validity window of key {kid} "
                    f"({signers[0].window()})",
                )
            )
            return False
        return True

    def _inclusion(
        self,
        index: int,
        named: int,
        leaf: bytes,
        proof: Sequence[bytes],
        failures: list[tuple[str, str]],
    ) -> bool:
        sizes = self.sizes
        at = bisect.bisect_right(sizes, index)
        covering = sizes[at] if at < len(sizes) else None
        info = self.ctx.checkpoints.get(named)
        if info is None:
            failures.append(("inclusion", f"names checkpoint {named}, which is not in the bundle"))
            return False
        ok = True
        if covering != named and index >= 0:
            should = "no checkpoint covers it" if covering is None else f"it should be {covering}"
            failures.append(
                (
                    "inclusion",
                    f"names checkpoint {named}, but {should} "
                    "(the smallest checkpoint above the index)",
                )
            )
            ok = False
        root, trusted = info
        try:
            verify_inclusion(index, named, leaf, proof, root)
        except ProofError:
            failures.append(
                ("inclusion", f"the proof does not lead to the root of checkpoint {named}")
            )
            return False
        except MalformedProof as exc:
            failures.append(("inclusion", f"bad proof against checkpoint {named}: {exc}"))
            return False
        if not trusted:
            failures.append(("inclusion", f"checkpoint {named} is not signed by a trusted key"))
            return False
        return ok


_tuple_new = tuple.__new__  # builds a NamedTuple without its Python-level __new__


NOTABLE_EVENTS = frozenset(
    {"boot", "stop", "config", "history-reset", "key-rotation", "clock-step"}
)
"""Events whose detail the checklist keeps: they bound downtime, declare the sensors
expected, or change the log's history or keys (docs/bundle-format.md §4.2)."""


def _compact(rec: Mapping[str, Any], values: bool = False) -> _Rec:
    time = rec["time"]
    key = time if len(time) == 27 else _time_key(time)
    kind = rec["kind"]
    extra: Any
    vals: tuple[tuple[str, str, float | None, int | None], ...] | None = None
    if kind == "reading":
        extra = "".join(str(v["qc"]["flag"]) if "qc" in v else "-" for v in rec["values"])
        if values:
            vals = tuple(
                (v["q"], v["u"], v["v"], v["qc"]["flag"] if "qc" in v else None)
                for v in rec["values"]
            )
    elif kind == "gap":
        extra = (rec["reason"], _time_key(rec["from"]), _time_key(rec["to"]))
    else:
        name = rec["event"]
        extra = (name, rec.get("detail") if name in NOTABLE_EVENTS else None)
    return _tuple_new(
        _Rec,
        (
            rec["index"],
            kind,
            rec.get("sensor"),
            rec.get("seq"),
            rec.get("src_seq"),
            (rec["src_seq_from"], rec["src_seq_to"]) if "src_seq_from" in rec else None,
            key,
            time,
            rec["clock"] == "synced",
            extra,
            vals,
            _fromiso(key).timestamp(),
        ),
    )


def _lenient_record(raw: bytes) -> Mapping[str, Any] | None:
    """The record in an entry that failed step 2, read as plain JSON if it can be,
    only to tell a person which reading it was (never to verify anything)."""
    try:
        doc = json.loads(raw[:MAX_ABOUT_BYTES])
    except (ValueError, RecursionError):
        return None
    rec = doc.get("rec") if isinstance(doc, dict) else None
    return rec if isinstance(rec, dict) else None


MAX_ABOUT_BYTES = 65_536
"""A record larger than this is not read for the report's description."""


def _text(x: Any, limit: int = 40) -> str | None:
    if x is None or isinstance(x, dict | list):
        return None
    text = str(x)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _about(rec: Mapping[str, Any] | None) -> tuple[str | None, str | None, str | None] | None:
    """(sensor, time, what it says) of a record, for a person reading a failure."""
    if rec is None:
        return None
    kind = rec.get("kind")
    what: str | None = None
    if kind == "reading" and isinstance(rec.get("values"), list):
        parts = []
        for v in rec["values"][:8]:
            if isinstance(v, dict):
                q, val, u = _text(v.get("q")), _text(v.get("v")), _text(v.get("u"))
                parts.append(" ".join(p for p in (q, val, u) if p is not None))
        what = "; ".join(p for p in parts if p) or None
    elif kind == "gap":
        what = (
            f"gap {_text(rec.get('from'))} to {_text(rec.get('to'))} ({_text(rec.get('reason'))})"
        )
    elif kind == "event":
        what = f"event {_text(rec.get('event'))}"
    return (_text(rec.get("sensor")), _text(rec.get("time")), what)


def _bound(when: datetime | None) -> str | None:
    return None if when is None else _standard_time(when)


def _covers(key: TrustedKey, time: str) -> bool:
    if key.valid_from is None and key.valid_until is None:
        return True
    return key.covers(parse_time(time))


# --- the engine: one checklist, fed entries in order -----------------------------------


class Checklist:
    """The checklist over one bundle, fed its entries in log order.

    ``Checklist(header, trusted, now=...)`` runs steps 1 and 5 at once (they need
    only the header); ``add`` takes each entry's EntryOutcome (steps 2–4, computed
    here or in a worker) and runs step 8 as the entries stream by; the tree of a
    tiled bundle reports through ``fail``/``passed``; ``finish`` runs steps 6
    (for per-entry proofs) and 7 and returns the Report. Memory is bounded by
    the number of sensors and checkpoints, not of entries.
    """

    def __init__(
        self,
        header: BundleHeader,
        trusted: TrustList | Iterable[TrustedKey | Verifier] | None,
        *,
        now: datetime,
        subset: bool = False,
        observer: EntryObserver | None = None,
        kept: Sequence[KeptCheckpoint] = (),
    ) -> None:
        """``subset``: the entries are some of a stretch of the log (chosen by sensor),
        so their indexes may skip; the tree proves nothing between them is missing.
        ``observer`` is shown every entry as it is checked, with its values (for the
        CSV and HTML reports). ``kept``: checkpoints from earlier bundles that this
        source must extend (lineage.py)."""
        if now.tzinfo is None:
            raise ValueError("verification needs a timezone-aware now, e.g. datetime.now(UTC)")
        self.run = _Run(header, now)
        _step_keys(self.run, trusted)
        _step_checkpoints(self.run)  # numbered 5, but 4 needs its results
        run = self.run
        self._own = {
            size: SignedCheckpoint(
                info.checkpoint, header.checkpoints[info.position], "this source"
            )
            for size, info in run.checkpoints.items()
            if info.trusted
        }
        self.lineage = Lineage(
            kept,
            origin=header.origin,
            verifiers=[k.verifier for ks in run.keys.values() for k in ks],
            fail=lambda reason, size: run.fail("consistency", reason, checkpoint=size),
            fork=self._fork,
        )
        self.lineage.against_checkpoints(self._own)
        for a, b in run.same_size:
            self._fork(
                self._own_at(a),
                self._own_at(b),
                f"two checkpoints of size {a[1]} with different roots",
            )
        self._completeness = _Completeness(self.run, subset=subset)
        self._now_key = _standard_time(now)
        self._first: tuple[str, str] | None = None
        self._last: tuple[str, str] | None = None
        self._first_index: int | None = None
        self._last_index: int | None = None
        self._future = 0
        self._unsynced = 0
        self.observer = observer

    def _own_at(self, pos_size: tuple[int, int]) -> SignedCheckpoint:
        pos = pos_size[0]
        note = self.run.header.checkpoints[pos]
        cp = Checkpoint.parse(split_note(note)[0])
        return SignedCheckpoint(cp, note, f"this source, checkpoints[{pos}]")

    def _fork(self, a: SignedCheckpoint, b: SignedCheckpoint, reason: str) -> None:
        self.run.forks.append(
            Fork(a.checkpoint.size, a.note, a.source, b.checkpoint.size, b.note, b.source, reason)
        )
        self.run.fail(
            "consistency",
            f"forked history: {reason} ({a.source}; {b.source}); both are validly signed",
            checkpoint=b.checkpoint.size,
        )

    def signed(self, note: str, source: str) -> SignedCheckpoint | None:
        """``note`` if it opens under the keys in force and has this origin, else None."""
        try:
            cp = Checkpoint.parse(split_note(note)[0])
            open_note(note, [k.verifier for ks in self.run.keys.values() for k in ks])
        except LedgerClientError:
            return None
        return SignedCheckpoint(cp, note, source) if cp.origin == self.run.header.origin else None

    def fork(self, a: SignedCheckpoint, b: SignedCheckpoint, reason: str) -> None:
        """Report two signed checkpoints that cannot be one history (also a failure)."""
        self._fork(a, b, reason)

    def wanted_roots(self) -> list[int]:
        """Tree sizes whose roots a tree rebuilt from tiles should report (``tree_root``)."""
        return self.lineage.wanted_sizes()

    def tree_root(self, size: int, root: bytes) -> None:
        """The root of the rebuilt tree at ``size`` (every checkpoint size, and the
        sizes ``wanted_roots`` asked for)."""
        self.lineage.tree_root(size, root)

    def context(self, *, proofs: bool = False) -> EntryContext:
        return self.run.entry_context(proofs=proofs, values=self.observer is not None)

    def fail(
        self, check: str, reason: str, entry: int | None = None, checkpoint: int | None = None
    ) -> None:
        self.run.fail(check, reason, entry, checkpoint)

    def passed(self, check: str, n: int = 1) -> None:
        self.run.passed(check, n)

    def add(self, outcomes: Iterable[tuple[Any, ...]]) -> None:
        """Steps 2–4 of each entry (EntryOutcomes, or their plain tuples from a worker)
        and step 8 as they stream by."""
        run = self.run
        tally = run.tally
        n_record = n_signed = n_skipped = n_included = n_future = n_unsynced = 0
        first, last = self._first, self._last
        lo, hi = self._first_index, self._last_index
        now_key = self._now_key
        completeness = self._completeness.add
        observer = self.observer
        count = 0
        for index, _, rec, record_ok, signed, included, failures, about in outcomes:
            count += 1
            for check, reason in failures:
                run.fail(check, reason, entry=index, about=about)
            if observer is not None:
                observer.entry(index, rec, not failures)
            if rec is not None:
                n_record += record_ok
                if signed:
                    n_signed += 1
                time_key = rec[6]
                if first is None or time_key < first[0]:
                    first = (time_key, rec[7])
                if last is None or time_key > last[0]:
                    last = (time_key, rec[7])
                if time_key > now_key:
                    n_future += 1
                if not rec[8]:
                    n_unsynced += 1
            else:
                n_skipped += 1
            if included:
                n_included += 1
            if lo is None or index < lo:
                lo = index
            if hi is None or index > hi:
                hi = index
            completeness(index, rec if record_ok else None)  # step 8: readable records only
        run.entries += count
        tally["record"].passed += n_record
        tally["signature"].passed += n_signed
        tally["signature"].skipped += n_skipped
        tally["inclusion"].passed += n_included
        self._future += n_future
        self._unsynced += n_unsynced
        self._first, self._last = first, last
        self._first_index, self._last_index = lo, hi

    def finish(
        self,
        *,
        anchor_checkers: Sequence[AnchorChecker] = (),
        consistency: Sequence[ConsistencyProof] | None = None,
        tree_size: int | None = None,
        tree_start: int = 0,
    ) -> Report:
        """Steps 6 (from ``consistency`` proofs, for v1), 7 and the rest of 8; the Report.

        ``tree_size``: for a tiled bundle, the size of the tree the entries were
        placed in (step 8 b then holds by construction).
        """
        run = self.run
        if consistency is not None:
            _step_consistency(run, consistency)
        self.lineage.finish(
            self._own, tree_span=None if tree_size is None else (tree_start, tree_size)
        )
        anchors = _step_anchors(run, anchor_checkers)
        sensors, events, timeline = self._completeness.finish(tree_size)
        if self._future:
            run.notes.append(
                f"{self._future} record(s) are dated after the verification time "
                f"{run.now.isoformat()}"
            )
        if self._unsynced:
            run.notes.append(
                f"{self._unsynced} record(s) were made while the gateway clock was not synced"
            )
        if run.failure_count > len(run.failures):
            run.notes.append(
                f"{run.failure_count - len(run.failures)} further failure(s) are counted "
                f"but not listed (the first {MAX_KEPT_FAILURES} are)"
            )
        steps = tuple(
            StepResult(
                _STEP_NUMBER[name],
                name,
                run.tally[name].passed,
                run.by_step[name],
                run.tally[name].skipped,
            )
            for name in STEPS
        )
        header = run.header
        return Report(
            ok=run.failure_count == 0,
            entries=run.entries,
            failures=tuple(sorted(run.failures, key=lambda f: _STEP_NUMBER[f.check])),
            steps=steps,
            origin=header.origin,
            device=header.device,
            keys_trusted=run.keys_trusted,
            keys=tuple(sorted(run.keys)),
            ignored_keys=tuple(sorted(run.ignored)),
            sensors=sensors,
            events=events,
            first_index=self._first_index,
            last_index=self._last_index,
            first_time=self._first[1] if self._first else None,
            last_time=self._last[1] if self._last else None,
            checkpoints=tuple(run.sizes),
            anchors=tuple(anchors),
            notes=tuple(run.notes),
            checked_at=run.now.isoformat(),
            recorded_by=_recorded_by(anchors, run.sizes),
            failure_count=run.failure_count,
            forks=tuple(run.forks),
            linked=tuple(self.lineage.linked),
            newest_note=self._own[max(self._own)].note if self._own else None,
            timeline=timeline,
        )


def verify_bundle(
    bundle: Bundle,
    trusted: TrustList | Iterable[TrustedKey | Verifier] | None = None,
    *,
    now: datetime,
    anchor_checkers: Sequence[AnchorChecker] = (),
    kept: Sequence[KeptCheckpoint] = (),
) -> Report:
    """Run the checklist over a version 1 ``bundle`` held in memory.

    ``trusted``: the regulator's keys (a TrustList, TrustedKeys or bare
    Verifiers). With None, the bundle's own keys are used and the report says
    they are not independently trusted. An empty collection trusts nothing.
    ``now`` is the verification time (timezone-aware); it is recorded in the
    report and records dated after it are noted. ``anchor_checkers`` confirm
    non-local receipts against independent ledgers (the only IO, theirs).
    For files of any size and format, ``ledger_client.verify_stream.verify_source``.
    """
    checklist = Checklist(bundle, trusted, now=now, kept=kept)
    checker = checklist.context(proofs=True).checker()
    checklist.add(
        checker.check(be.index, be.entry, be.checkpoint, be.inclusion) for be in bundle.entries
    )
    return checklist.finish(anchor_checkers=anchor_checkers, consistency=bundle.consistency)


# --- step 1: keys -------------------------------------------------------------------------


def _window_time(text: str | None, what: str) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_time(text)
    except LedgerClientError as exc:
        raise RecordError(f"{what}: {exc}") from exc


def _step_keys(run: _Run, trusted: TrustList | Iterable[TrustedKey | Verifier] | None) -> None:
    bundle_keys: list[TrustedKey] = []
    first_seen: dict[str, int] = {}
    for i, dk in enumerate(run.header.keys):
        if dk.vkey in first_seen:
            # Harmless on its face, but an exporter never writes it: refuse, as with
            # any other edit to the bundle.
            run.fail("keys", f"keys[{i}] repeats keys[{first_seen[dk.vkey]}]")
            continue
        first_seen[dk.vkey] = i
        try:
            verifier = Verifier.from_vkey(dk.vkey)
            valid_from = _window_time(dk.valid_from, "valid_from")
            valid_until = _window_time(dk.valid_until, "valid_until")
        except LedgerClientError as exc:
            run.fail("keys", f"keys[{i}]: {exc}")
            continue
        bundle_keys.append(TrustedKey(verifier, valid_from, valid_until))

    if trusted is None:
        in_force = bundle_keys
        run.keys_trusted = False
        run.notes.append(
            "the keys come from the bundle itself and are NOT independently trusted "
            "(give a trust file to check them)"
        )
        if not in_force:
            run.fail("keys", "the bundle names no usable device key and no trust list was given")
    else:
        items = trusted.keys if isinstance(trusted, TrustList) else tuple(trusted)
        in_force = [k if isinstance(k, TrustedKey) else TrustedKey(k) for k in items]
        run.keys_trusted = True
        if not in_force:
            run.fail("keys", "the trust list names no key, so nothing can verify")
        known = {(k.verifier.name, k.verifier.public_key) for k in in_force}
        for k in bundle_keys:
            if (k.verifier.name, k.verifier.public_key) not in known:
                run.ignored[k.key_id] = k.verifier.to_vkey()
        if run.ignored:
            run.notes.append(
                "bundle key(s) not in the trust list, ignored: " + ", ".join(sorted(run.ignored))
            )
    for k in in_force:
        run.keys.setdefault(k.key_id, []).append(k)
    run.passed("keys", len(in_force))


# --- step 5: checkpoints ------------------------------------------------------------------


def _step_checkpoints(run: _Run) -> None:
    verifiers = [k.verifier for ks in run.keys.values() for k in ks]
    previous: int | None = None
    for pos, note in enumerate(run.header.checkpoints):
        try:
            text, _ = split_note(note)
            cp = Checkpoint.parse(text)
        except LedgerClientError as exc:
            run.fail("checkpoint", f"checkpoints[{pos}] cannot be read: {exc}")
            continue
        ok = True
        trusted = False
        if verifiers:
            try:
                open_note(note, verifiers)
                trusted = True
            except LedgerClientError as exc:
                run.fail("checkpoint", str(exc), checkpoint=cp.size)
                ok = False
        else:
            run.fail("checkpoint", "no trusted key to check its signature", checkpoint=cp.size)
            ok = False
        if cp.origin != run.header.origin:
            run.fail(
                "checkpoint",
                f"origin {cp.origin!r} is not the bundle's origin {run.header.origin!r}",
                checkpoint=cp.size,
            )
            ok = trusted = False
        if cp.size == 0:
            run.fail("checkpoint", "an empty checkpoint proves nothing", checkpoint=0)
            ok = False
        if previous is not None and cp.size <= previous:
            run.fail(
                "checkpoint",
                f"size {cp.size} does not ascend from the previous checkpoint's {previous}",
                checkpoint=cp.size,
            )
            ok = False
        previous = cp.size if previous is None else max(previous, cp.size)
        if cp.size in run.checkpoints:
            ok = False  # the duplicate was named above; keep the first for what follows
            first = run.checkpoints[cp.size]
            if trusted and first.trusted and first.checkpoint.root != cp.root:
                run.same_size.append(((first.position, cp.size), (pos, cp.size)))
        else:
            run.checkpoints[cp.size] = _CheckpointInfo(pos, cp, trusted)
        if ok:
            run.passed("checkpoint")
    run.sizes = sorted(run.checkpoints)


# --- step 6: consistency ------------------------------------------------------------------


def _step_consistency(run: _Run, consistency: Sequence[ConsistencyProof]) -> None:
    proofs: dict[tuple[int, int], tuple[bytes, ...]] = {}
    order = [(c.size1, c.size2) for c in consistency]
    if order != sorted(order):
        # The exporter writes them in ascending order; anything else was edited.
        run.fail("consistency", "the consistency proofs are not in ascending order of size")
    for c in consistency:
        pair = (c.size1, c.size2)
        if pair in proofs:
            run.fail(
                "consistency",
                f"more than one proof from size {c.size1} to {c.size2}",
                checkpoint=c.size2,
            )
            continue
        proofs[pair] = c.proof
    for size1, size2 in itertools.pairwise(run.sizes):
        proof = proofs.pop((size1, size2), None)
        if proof is None:
            run.fail(
                "consistency",
                f"no consistency proof from checkpoint {size1} to checkpoint {size2}",
                checkpoint=size2,
            )
            continue
        root1 = run.checkpoints[size1].checkpoint.root
        root2 = run.checkpoints[size2].checkpoint.root
        try:
            verify_consistency(size1, size2, root1, root2, proof)
        except LedgerClientError as exc:
            run.fail(
                "consistency",
                f"checkpoint {size1} is not proven a prefix of it: {exc}",
                checkpoint=size2,
            )
            continue
        run.passed("consistency")
    for size1, size2 in sorted(proofs):
        run.fail(
            "consistency",
            f"a proof from size {size1} to {size2} links no consecutive pair of checkpoints",
            checkpoint=size2,
        )


# --- step 7: anchors ----------------------------------------------------------------------


def _check_local_receipt(anchor: AnchorReceipt) -> str | None:
    receipt = anchor.receipt
    journal, seq, when = receipt.get("journal"), receipt.get("seq"), receipt.get("time")
    if not isinstance(journal, str) or not journal:
        return "the receipt has no journal name"
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        return "the receipt's seq is not a non-negative integer"
    try:
        parse_time(str(when))
    except LedgerClientError:
        return f"the receipt's time {when!r} is not RFC 3339 UTC"
    if anchor.state != "final":
        return f"a local anchor is final once journalled, not {anchor.state!r}"
    return None


def _step_anchors(run: _Run, checkers: Sequence[AnchorChecker]) -> list[AnchorResult]:
    results: list[AnchorResult] = []
    for anchor in run.header.anchors:
        info = run.checkpoints.get(anchor.checkpoint)
        problem: str | None = None
        if info is None:
            problem = f"names checkpoint {anchor.checkpoint}, which is not in the bundle"
        elif len(anchor.digest) != HASH_SIZE:
            problem = f"the digest is {len(anchor.digest)} bytes, not {HASH_SIZE}"
        elif anchor.digest != info.checkpoint.digest():
            problem = "the digest is not the checkpoint's digest"
        elif anchor.backend == "local":
            problem = _check_local_receipt(anchor)
        elif not anchor.backend.startswith(KNOWN_BACKEND_FAMILIES):
            problem = (
                f"backend {anchor.backend!r} is not one this verifier knows "
                f"({', '.join(f + '…' for f in KNOWN_BACKEND_FAMILIES)} or local)"
            )
        if problem is not None:
            results.append(_failed_anchor(run, anchor, problem))
            continue
        if anchor.backend == "local":
            run.passed("anchors")
            results.append(
                AnchorResult(anchor.checkpoint, anchor.backend, anchor.state, LOCAL_STATUS)
            )
            continue
        checker = next((c for c in checkers if c.handles(anchor.backend)), None)
        if checker is None:
            run.tally["anchors"].skipped += 1  # present, not checked: never "passed"
            results.append(
                AnchorResult(anchor.checkpoint, anchor.backend, anchor.state, UNCHECKED_STATUS)
            )
            continue
        try:
            evidence = checker.check(anchor)
        except LedgerClientError as exc:
            results.append(_failed_anchor(run, anchor, str(exc)))
            continue
        if evidence.time.tzinfo is None:  # a checker bug must not pass as a verdict
            results.append(_failed_anchor(run, anchor, "the checker gave a time with no zone"))
            continue
        run.passed("anchors")
        results.append(
            AnchorResult(
                anchor.checkpoint,
                anchor.backend,
                anchor.state,
                VERIFIED_STATUS,
                time=_standard_time(evidence.time),
                detail=evidence.detail,
            )
        )
    if not run.header.anchors:
        run.notes.append("the bundle holds no anchor receipt")
    elif not any(r.verified for r in results):
        run.notes.append(
            "no anchor was checked against an independent ledger "
            "(local anchors are kept by the box itself; others need an online check)"
        )
    unchecked = sum(1 for r in results if r.status == UNCHECKED_STATUS)
    if unchecked and any(r.verified for r in results):
        run.notes.append(f"{unchecked} anchor receipt(s) had no checker and were not checked")
    return results


def _failed_anchor(run: _Run, anchor: AnchorReceipt, problem: str) -> AnchorResult:
    run.fail("anchors", f"{anchor.backend} anchor: {problem}", checkpoint=anchor.checkpoint)
    return AnchorResult(anchor.checkpoint, anchor.backend, anchor.state, f"failed: {problem}")


def _recorded_by(anchors: Sequence[AnchorResult], sizes: Sequence[int]) -> tuple[RecordedBy, ...]:
    """For each run of entries, the earliest verified anchor time of a checkpoint covering it.

    Entry i is covered by every checkpoint of size > i, so walking the sizes
    from the largest down, the running minimum is the best bound.
    """
    best: dict[int, tuple[str, str]] = {}
    for a in anchors:
        if a.verified and a.time is not None:
            current = best.get(a.checkpoint)
            if current is None or a.time < current[0]:
                best[a.checkpoint] = (a.time, a.backend)
    if not best:
        return ()
    ordered = sorted(set(sizes) | set(best))
    out: list[RecordedBy] = []
    running: tuple[str, str] | None = None
    for i in range(len(ordered) - 1, -1, -1):
        size = ordered[i]
        here = best.get(size)
        if here is not None and (running is None or here[0] < running[0]):
            running = here
        if running is None:
            continue
        first = ordered[i - 1] if i > 0 else 0
        if first >= size:
            continue
        if out and (out[-1].time, out[-1].backend) == running and out[-1].first == size:
            out[-1] = RecordedBy(first, out[-1].last, running[0], running[1])
        else:
            out.append(RecordedBy(first, size - 1, running[0], running[1]))
    out.reverse()
    return tuple(out)


# --- step 8: completeness -----------------------------------------------------------------

SRC_WINDOW = 1000
"""8 d): a ``src_seq`` may arrive late while it lies within this many numbers of the
highest of its run; a number still missing further down is decided then. The gateway
declares a lost number by then at the latest (gateway/sources/mqtt.py, REORDER_MAX_SEQS)."""
SILENCE_TOLERANCE_S = 1.0
"""8 f): added to a sensor's declared allowance before an uncovered silence fails."""
END_SLACK_S = 60.0
"""8 f): at the end of a bundle a declared sensor may be uncovered for its allowance, its
repeat period and this much more (a gap record on its way as the bundle was cut)."""
CRASH_WINDOW_S = 660.0
"""8 d): numbers found missing this long or less before an unclean stop may still have
been in the gateway's reorder window (at most 600 s) when it stopped."""
MAX_GAP_SPANS = 1000
"""Merged gap spans kept per sensor in the summary; the rest are counted."""
MAX_TIMELINE = 1000
"""Notable events kept in the report's timeline; the rest are counted in a note."""
_MAX_PENDING = 1000  # per sensor: gap ranges above its run's highest src_seq, kept
_MAX_DECLARED = 1000  # per sensor: ranges a gap declared lost that may still arrive
_MAX_QC_PATTERNS = 4096  # per sensor: distinct QC flag strings counted before folding
_MAX_SENSORS_DECLARED = 10_000  # sensors one boot or config event may declare
_MAX_NAMED = 20  # sensors named in one note
_MAX_LISTED = 100  # sensor ids kept per list of a timeline item


def _range_text(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}–{hi}"


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


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and 0 <= x < 1e12


def _names(x: Any) -> tuple[str, ...]:
    """A JSON list of sensor ids, as far as it is one (at most _MAX_LISTED kept)."""
    if not isinstance(x, list):
        return ()
    return tuple(n for n in x[:_MAX_LISTED] if isinstance(n, str))


def _instant(text: Any) -> float | None:
    """A record's time (or a time an event's detail gives) in seconds, None if it is not one."""
    try:
        return parse_time(text).timestamp()
    except (LedgerClientError, TypeError):
        return None


def _has(ranges: list[list[Any]], n: int) -> bool:
    return any(r[0] <= n <= r[1] for r in ranges)


def _take(ranges: list[list[Any]], n: int) -> bool:
    """Remove ``n`` from the ranges ([first, last, …] lists) that hold it; whether one did."""
    for k, r in enumerate(ranges):
        if r[0] <= n <= r[1]:
            parts = []
            if r[0] < n:
                parts.append([r[0], n - 1, *r[2:]])
            if n < r[1]:
                parts.append([n + 1, r[1], *r[2:]])
            ranges[k : k + 1] = parts
            return True
    return False


def _cut(ranges: list[list[Any]], lo: int, hi: int) -> list[tuple[int, int]]:
    """Remove [lo, hi] from the ranges; the parts removed."""
    out: list[list[Any]] = []
    removed: list[tuple[int, int]] = []
    for r in ranges:
        a, b = r[0], r[1]
        if b < lo or a > hi:
            out.append(r)
            continue
        removed.append((max(a, lo), min(b, hi)))
        if a < lo:
            out.append([a, lo - 1, *r[2:]])
        if b > hi:
            out.append([hi + 1, b, *r[2:]])
    ranges[:] = out
    return removed


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


_MAX_INDEX_SPAN = 1 << 28
"""Entry indexes of one bundle lie within this span of the first (a bitmap of it is
32 MiB); a bundle that claims more is refused rather than allowed to exhaust memory."""


class _SensorState:
    """What step 8 keeps of one sensor: a few numbers, and windows bounded by constants."""

    __slots__ = (
        "L",
        "L_index",
        "L_lost",
        "L_text",
        "across_boot",
        "ahead",
        "blind",
        "calm",
        "cand",
        "cand_ranges",
        "declared",
        "end_limit",
        "excused",
        "first",
        "first_run",
        "gaps",
        "hi",
        "hi_index",
        "holes",
        "last",
        "late",
        "late_gap",
        "limit",
        "prev",
        "qc",
        "readings",
        "seq",
        "seq_index",
        "seq_lost",
        "span_tail",
        "spans",
        "spans_more",
        "start",
        "unchecked",
        "unsynced",
    )

    def __init__(self) -> None:
        # c) the last seq, and the count of unreadable or missing entries then
        self.seq: int | None = None
        self.seq_index = -1
        self.seq_lost = 0
        self.blind = False
        """The sensor's records just before are unknown (a seq hole): the next src_seq
        jump is not judged."""
        # d) the current run of src_seq numbers
        self.hi: int | None = None
        """The highest src_seq of the run, and the entry that logged it."""
        self.hi_index = -1
        self.start = 0
        self.first_run = True
        """The run is the sensor's first in the bundle (its start is not its beginning)."""
        self.holes: list[list[Any]] = []
        """Numbers of the run not logged and not declared lost, still open, ascending:
        [first, last, after entry, at entry, at time, excuse or None, at time as text]."""
        self.declared: list[list[Any]] = []
        """Ranges of the run a gap record declared lost and that have not arrived."""
        self.ahead: list[list[Any]] = []
        """Ranges gap records declared lost above the run's highest (an older gateway
        wrote the gap just before the reading that revealed the loss)."""
        self.prev: tuple[int, int, list[list[Any]]] | None = None
        """The run before (start, highest, numbers it never logged): a restart at a
        number that arrived late at the start of a bundle must not count the ones the run
        before logged as missing."""
        self.cand: tuple[int, int] | None = None
        """A src_seq that fits nowhere in the run (src_seq, entry): a restarted counter if
        the next reading does not fit the run either, else a stray late arrival."""
        self.cand_ranges: list[tuple[int, int]] = []
        self.across_boot = False
        """A boot event came after the run's last reading."""
        self.calm = False
        """Nothing open: the next src_seq, one above the highest, needs no other look."""
        self.late = 0
        self.late_gap = 0
        self.excused: dict[str, int] = {}
        # f) the latest covered instant and the declared expectation
        self.L: float | None = None
        self.L_text = ""
        self.L_index = -1
        self.L_lost = 0
        self.limit: float | None = None
        self.end_limit = 0.0
        self.unchecked = False
        # the summary
        self.readings = 0
        self.gaps = 0
        self.first = "~"  # sorts after every time
        self.last = ""
        self.unsynced = 0
        self.qc: dict[str, int] = {}
        self.spans: list[list[Any]] = []
        self.span_tail: list[Any] | None = None
        self.spans_more = 0

    def settle(self) -> None:
        self.calm = (
            self.hi is not None
            and not self.holes
            and self.cand is None
            and not self.ahead
            and not self.blind
            and not self.across_boot
        )


class _Completeness:
    """Step 8, fed entries in the order the bundle lists them.

    a) indexes ascend with no repeat and no hole; b) each lies below the largest
    checkpoint; c) per sensor, ``seq`` steps by one; d) per sensor and counter run,
    every ``src_seq`` number skipped is logged (late is fine) or declared lost by a gap
    record; f) no declared sensor is uncovered for longer than its allowance. Only
    records that passed step 2 take part (``add`` is given None for the others). State:
    a bitmap of the indexes seen, the holes still open and, per sensor, a few numbers and
    windows bounded by constants.
    """

    def __init__(self, run: _Run, *, subset: bool = False) -> None:
        self.run = run
        self.subset = subset
        self.failed: set[int] = set()
        self.base: int | None = None
        self.seen = bytearray()
        self.highest: int | None = None
        self.holes: list[tuple[int, int]] = []  # (first, last) missing so far, ascending
        self.events = 0
        self.count = 0
        self.largest = run.sizes[-1] if run.sizes else None
        self.lost = 0
        """Entries so far that failed step 2: any of them may have been a record of any
        sensor."""
        self.states: dict[str, _SensorState] = {}
        self.declared: set[str] = set()
        """f) the sensors the latest boot or config event declares."""
        self.suspended = False
        """f) after a stop event, until the next boot: nothing is expected."""
        self.t_max = float("-inf")
        self.t_max_text = ""
        self.bad_declarations = 0
        self.timeline: list[TimelineEvent] = []
        self.timeline_more = 0

    def fail(
        self, reason: str, entry: int | None, about: tuple[str, str | None] | None = None
    ) -> None:
        """A failure of step 8; ``about``: the sensor and time it concerns."""
        if about is None:
            self.run.fail("completeness", reason, entry=entry)
        else:
            self.run.fail("completeness", reason, entry=entry, about=(*about, None))
        if entry is not None and len(self.failed) < MAX_KEPT_FAILURES:
            self.failed.add(entry)

    def _mark(self, i: int) -> bool:
        """Record index ``i`` as seen; False if it already was (or is out of reach)."""
        if self.base is None:
            self.base = i
        off = i - self.base
        if not 0 <= off < _MAX_INDEX_SPAN:
            self.fail(f"index {i} is too far from the bundle's first index {self.base}", i)
            return False
        byte, bit = divmod(off, 8)
        if byte >= len(self.seen):
            self.seen.extend(bytes(max(byte + 1 - len(self.seen), len(self.seen))))
        if self.seen[byte] >> bit & 1:
            return False
        self.seen[byte] |= 1 << bit
        return True

    def add(self, i: int, r: tuple[Any, ...] | None) -> None:
        """Entry ``i`` with its compact record if it passed step 2, else None."""
        self.count += 1
        highest = self.highest
        if highest is not None and i == highest + 1 and self.base is not None:
            # The usual case: the next index. Mark it seen, inline.
            off = i - self.base
            byte = off >> 3
            if byte < len(self.seen) and off < _MAX_INDEX_SPAN:
                self.seen[byte] |= 1 << (off & 7)
                self.highest = i
                if self.largest is None or i >= self.largest:
                    self._uncovered(i)
                if r is not None:
                    self._sensor(i, r)
                else:
                    self.lost += 1
                return
        about = None if r is None or r[2] is None else (r[2], r[7])
        if not self._mark(i):
            self.fail("appears more than once", i, about)
        elif highest is not None and i < highest:
            self.fail(f"out of order (listed after entry {highest})", i, about)
            self._fill(i)
        elif highest is not None and i > highest + 1 and not self.subset:
            self.holes.append((highest + 1, i - 1))
        if highest is None or i > highest:
            self.highest = i
        if self.largest is None or i >= self.largest:
            self._uncovered(i)
        if r is not None:
            self._sensor(i, r)
        else:
            self.lost += 1

    def _uncovered(self, i: int) -> None:
        what = (
            "there is no checkpoint" if self.largest is None else f"the largest is {self.largest}"
        )
        self.fail(f"not covered by any checkpoint ({what})", i)

    def _fill(self, i: int) -> None:
        at = bisect.bisect_right(self.holes, (i, i)) - 1
        for k in (at, at + 1):
            if 0 <= k < len(self.holes):
                lo, hi = self.holes[k]
                if lo <= i <= hi:
                    parts = [(lo, i - 1)] if lo < i else []
                    parts += [(i + 1, hi)] if i < hi else []
                    self.holes[k : k + 1] = parts
                    return

    def _sensor(self, index: int, r: tuple[Any, ...]) -> None:
        # r is a _Rec or the plain tuple of one (from a worker): read it by position.
        t = r[11]
        if t > self.t_max:
            self.t_max = t
            self.t_max_text = r[7]
        kind, sensor, seq = r[1], r[2], r[3]
        if kind == "event":
            self.events += 1
            if r[9][0] in NOTABLE_EVENTS:
                self._event(index, r)
            return
        if sensor is None or seq is None:  # parse_entry guarantees both for readings and gaps
            return
        st = self.states.get(sensor)
        if st is None:
            st = self.states[sensor] = _SensorState()
        lost = self.lost
        pseq = st.seq
        unknown = False  # the sensor's records just before this one are not known
        if pseq is not None and seq != pseq + 1:
            unknown = self._seq_step(st, (sensor, r[7]), index, seq, pseq)
        st.seq = seq
        st.seq_index = index
        st.seq_lost = lost
        if kind != "reading":
            self._gap(st, sensor, index, r, unknown)
            return
        st.readings += 1
        key = r[6]
        if key > st.last:
            st.last = key
        if key < st.first:
            st.first = key
        if not r[8]:
            st.unsynced += 1
        flags = r[9]
        n = st.qc.get(flags)
        if n is None:
            self._new_qc(st, flags)
        else:
            st.qc[flags] = n + 1
        src = r[4]
        if src is not None:
            if st.calm and src == st.hi + 1:  # type: ignore[operator]  # calm: hi is set
                st.hi = src
                st.hi_index = index
            else:
                self._src(st, sensor, index, src, t, r[7])
        limit = st.limit
        if limit is None:
            st.unchecked = True
        last = st.L
        if last is None or t > last:
            if (
                last is not None
                and limit is not None
                and t - last > limit
                and not unknown
                and not self.suspended
            ):
                self.fail(
                    f"sensor {sensor}: silent from {st.L_text} to {r[7]} "
                    f"({_duration(t - last)}) with no gap record",
                    index,
                    (sensor, r[7]),
                )
            st.L = t
            st.L_text = r[7]
            st.L_index = index
            st.L_lost = lost

    # c) ---------------------------------------------------------------------------------

    def _seq_step(
        self, st: _SensorState, about: tuple[str, str], index: int, seq: int, pseq: int
    ) -> bool:
        """A seq that is not the previous one plus 1; whether records of the sensor are
        missing before this one (then d and f do not judge what they might have said)."""
        sensor = about[0]
        if seq <= pseq:
            self.fail(
                f"sensor {sensor}: seq {seq} does not follow seq {pseq} of entry {st.seq_index}",
                index,
                about,
            )
            return False
        if self.lost - st.seq_lost < seq - pseq - 1:
            self.fail(
                f"sensor {sensor}: seq {_range_text(pseq + 1, seq - 1)} missing "
                f"(seq jumps from {pseq} at entry {st.seq_index} to {seq})",
                index,
                about,
            )
        # else: as many entries between them failed step 2: those are the failures, and
        # they may be these records.
        st.blind = True
        st.calm = False
        return True

    # d) ---------------------------------------------------------------------------------

    def _src(self, st: _SensorState, sensor: str, index: int, s: int, t: float, text: str) -> None:
        """A reading's src_seq, off the usual path (see docs/bundle-format.md §9, 8 d)."""
        hi = st.hi
        if hi is None:
            self._start_run(st, s, index, first=True)
            st.blind = st.across_boot = False
            st.settle()
            return
        if st.cand is not None:
            cand, st.cand = st.cand, None
            ranges, st.cand_ranges = st.cand_ranges, []
            if self._fits(st, s):
                st.late += 1  # the one that fitted nowhere was a stray late arrival
            else:  # the counter restarted at the candidate
                unlogged = [[h[0], h[1]] for h in st.holes]
                st.prev = (st.start, hi, unlogged[-_MAX_DECLARED:])
                self._close_run(st, sensor)
                self._start_run(st, cand[0], cand[1], first=False)
                for lo, up in ranges:
                    self._declare(st, lo, up)
                hi = cand[0]
        if s > hi:
            if s > hi + 1 and not st.blind:
                self._open(st, hi + 1, s - 1, index, t, text)
            elif s > hi + 1:  # the records before are unknown: take the skip as explained
                st.declared.extend([a, b] for a, b in _cut(st.ahead, hi + 1, s - 1))
            if st.ahead and _cut(st.ahead, s, s):
                st.late += 1  # a gap record declared it lost just before it came
                st.late_gap += 1
            st.hi = s
            st.hi_index = index
            floor = s - SRC_WINDOW
            if st.holes and st.holes[0][0] < floor:
                self._decide(st, sensor, floor)
            if st.declared and st.declared[0][1] < floor:
                st.declared = [r for r in st.declared if r[1] >= floor]
        elif _take(st.holes, s):
            st.late += 1
        elif _take(st.declared, s):
            st.late += 1
            st.late_gap += 1
        else:
            st.cand = (s, index)
        st.blind = st.across_boot = False
        st.settle()

    def _fits(self, st: _SensorState, s: int) -> bool:
        return st.hi is None or s > st.hi or _has(st.holes, s) or _has(st.declared, s)

    def _start_run(self, st: _SensorState, s: int, index: int, *, first: bool) -> None:
        ahead = st.ahead if first else []
        st.hi, st.hi_index, st.start, st.first_run = s, index, s, first
        st.holes, st.declared, st.ahead = [], [], []
        for lo, up in ahead:  # declared lost before the sensor's first reading
            self._declare(st, lo, up)

    def _open(self, st: _SensorState, lo: int, up: int, index: int, t: float, text: str) -> None:
        """Numbers lo..up skipped by the reading at ``index`` (at ``t``, ``text``): open, but
        for those a gap record has already declared lost."""
        excuse = "restart" if st.across_boot else None
        holes = [[lo, up, st.hi_index, index, t, excuse, text]]
        if st.prev is not None and lo <= st.prev[1] and up >= st.prev[0]:
            logged = [[st.prev[0], st.prev[1]]]  # what the run before logged
            for a, b in st.prev[2]:
                _cut(logged, a, b)
            for a, b in logged:
                _cut(holes, a, b)
        if st.ahead:
            for a, b in _cut(st.ahead, lo, up):
                _cut(holes, a, b)
                st.declared.append([a, b])
            del st.declared[:-_MAX_DECLARED]
        st.holes.extend(holes)

    def _declare(self, st: _SensorState, lo: int, up: int) -> None:
        """A gap record declared src_seq lo..up lost."""
        if st.cand is not None and len(st.cand_ranges) < _MAX_PENDING:
            st.cand_ranges.append((lo, up))  # perhaps of the run the candidate starts
        hi = st.hi
        if hi is not None and lo <= hi:
            top = min(up, hi)
            for a, b in _cut(st.holes, lo, top):
                st.declared.append([a, b])
            if st.first_run and lo < st.start:
                st.declared.append([lo, min(top, st.start - 1)])
            del st.declared[:-_MAX_DECLARED]
        if (hi is None or up > hi) and len(st.ahead) < _MAX_PENDING:
            st.ahead.append([lo if hi is None else max(lo, hi + 1), up])
        st.settle()

    def _decide(self, st: _SensorState, sensor: str, floor: int | None) -> None:
        """Decide the open numbers below ``floor`` (all, if None): no record can fill them."""
        keep: list[list[Any]] = []
        for hole in st.holes:
            lo, up, after, at, _, excuse, text = hole
            if floor is not None and lo >= floor:
                keep.append(hole)
                continue
            if floor is not None and up >= floor:
                keep.append([floor, *hole[1:]])
                up = floor - 1
            if excuse is None and st.first_run and (self.base or 0) > 0:
                # The bundle starts part-way through the log: numbers just above the
                # first one it holds may have been logged before its first entry.
                early = min(up, st.start + SRC_WINDOW - 1)
                if lo <= early:
                    st.excused["start"] = st.excused.get("start", 0) + early - lo + 1
                    lo = early + 1
            if lo > up:
                continue
            if excuse is not None:
                st.excused[excuse] = st.excused.get(excuse, 0) + up - lo + 1
                continue
            self.fail(
                f"sensor {sensor}: src_seq {_range_text(lo, up)} skipped after entry {after} "
                "and no gap record covers it",
                at,
                (sensor, text),
            )
        st.holes = keep

    def _close_run(self, st: _SensorState, sensor: str) -> None:
        self._decide(st, sensor, None)

    # f), and the summary of gaps ----------------------------------------------------------

    def _gap(
        self, st: _SensorState, sensor: str, index: int, r: tuple[Any, ...], unknown: bool
    ) -> None:
        st.gaps += 1
        if not r[8]:
            st.unsynced += 1
        reason, start, end = r[9]
        tail = st.span_tail
        if tail is not None and tail[2] == reason and start <= tail[1]:
            if end > tail[1]:
                tail[1] = end
            if start < tail[0]:
                tail[0] = start
            tail[3] += 1
        else:
            tail = st.span_tail = [start, end, reason, 1]
            if len(st.spans) < MAX_GAP_SPANS:
                st.spans.append(tail)
            else:
                st.spans_more += 1
        if r[5] is not None:
            self._declare(st, r[5][0], r[5][1])
        begin, until = _fromiso(start).timestamp(), _fromiso(end).timestamp()
        last = st.L
        if st.limit is None:
            st.unchecked = True
        elif last is not None and begin - last > st.limit and not unknown and not self.suspended:
            self.fail(
                f"sensor {sensor}: silent from {st.L_text} to {start} "
                f"({_duration(begin - last)}, where this gap starts) with no gap record",
                index,
                (sensor, r[7]),
            )
        if last is None or until > last:
            st.L = until
            st.L_text = end
            st.L_index = index
            st.L_lost = self.lost

    def _event(self, index: int, r: tuple[Any, ...]) -> None:
        name, detail = r[9]
        detail = detail if isinstance(detail, dict) else {}
        item: TimelineEvent
        if name == "boot":
            item = self._boot(index, r, detail)
        elif name == "config":
            watched = None
            if isinstance(detail.get("sensors"), dict):
                watched = self._declare_sensors(detail["sensors"])
            for sensor in _names(detail.get("removed")):
                self._undeclare(sensor)
            item = TimelineEvent(
                index,
                r[7],
                name,
                watched=watched,
                added=_names(detail.get("added")),
                removed=_names(detail.get("removed")),
                changed=_names(detail.get("changed")),
            )
        elif name == "stop":
            self.suspended = True
            cause = detail.get("cause")
            item = TimelineEvent(index, r[7], name, cause=cause if isinstance(cause, str) else None)
        else:
            item = TimelineEvent(index, r[7], name)
        if len(self.timeline) < MAX_TIMELINE:
            self.timeline.append(item)
        else:
            self.timeline_more += 1

    def _boot(self, index: int, r: tuple[Any, ...], detail: dict[str, Any]) -> TimelineEvent:
        self.suspended = False
        for st in self.states.values():  # the gateway's memory of src_seq starts again
            st.across_boot = True
            st.calm = False
        previous = detail.get("previous")
        stop = when = down = None
        if isinstance(previous, dict):
            stop = previous.get("stop") if previous.get("stop") in ("clean", "unclean") else None
            when = previous.get("time") if isinstance(previous.get("time"), str) else None
            before = _instant(when)
            if before is not None:
                down = round(r[11] - before, 6)
                if stop == "unclean":
                    for st in self.states.values():
                        for hole in st.holes:
                            if hole[5] is None and hole[4] >= before - CRASH_WINDOW_S:
                                hole[5] = "crash"
        sensors = detail.get("sensors")
        watched = self._declare_sensors(sensors if isinstance(sensors, dict) else {})
        return TimelineEvent(
            index,
            r[7],
            "boot",
            previous_stop=stop,
            previous_time=when,
            downtime_s=down,
            watched=watched if isinstance(sensors, dict) else None,
        )

    def _declare_sensors(self, sensors: dict[Any, Any]) -> int:
        """A boot's or config event's ``sensors``: the declaration from here on."""
        new: dict[str, tuple[float, float]] = {}
        for sensor, e in itertools.islice(sensors.items(), _MAX_SENSORS_DECLARED):
            allowance = e.get("allowance_s") if isinstance(e, dict) else None
            repeat = e.get("repeat_s") if isinstance(e, dict) else None
            if isinstance(sensor, str) and _number(allowance) and _number(repeat):
                new[sensor] = (float(allowance or 0), float(repeat or 0))
            else:
                self.bad_declarations += 1
        for sensor in self.declared - new.keys():
            self._undeclare(sensor)
        for sensor, (allowance, repeat) in new.items():
            st = self.states.get(sensor)
            if st is None:
                st = self.states[sensor] = _SensorState()
            st.limit = allowance + SILENCE_TOLERANCE_S
            st.end_limit = allowance + repeat + END_SLACK_S
        self.declared = set(new)
        return len(new)

    def _undeclare(self, sensor: str) -> None:
        self.declared.discard(sensor)
        st = self.states.get(sensor)
        if st is not None:
            st.limit = None

    def _new_qc(self, st: _SensorState, flags: str) -> None:
        if len(st.qc) >= _MAX_QC_PATTERNS:  # fold into single digits: bounded by ten keys
            folded: dict[str, int] = {}
            for pattern, n in st.qc.items():
                for digit in pattern:
                    folded[digit] = folded.get(digit, 0) + n
            st.qc = folded
            for digit in flags:
                st.qc[digit] = st.qc.get(digit, 0) + 1
            return
        st.qc[flags] = 1

    # the end ----------------------------------------------------------------------------

    def finish(
        self, tree_size: int | None
    ) -> tuple[dict[str, SensorCounts], int, tuple[TimelineEvent, ...]]:
        if self.count == 0:
            self.fail("the bundle holds no entries", None)
        for lo, hi in self.holes:
            more = "" if lo == hi else f", and so are {_range_text(lo + 1, hi)}"
            self.fail(f"missing{more} (indexes jump from {lo - 1} to {hi + 1})", lo)
        del tree_size  # a tiled bundle places every entry in its tree: a) and b) hold
        notes = self.run.notes
        for sensor, st in sorted(self.states.items()):
            self._close_run(st, sensor)
        if not self.suspended:
            for sensor in sorted(self.declared):
                st = self.states[sensor]
                last = st.L
                if last is None or self.lost > st.L_lost:
                    continue  # no record yet; or entries after its last failed step 2
                silent = self.t_max - last
                if silent > st.end_limit:
                    self.fail(
                        f"sensor {sensor}: silent since {st.L_text}, {_duration(silent)} "
                        f"before the bundle's last record ({self.t_max_text}), with no gap "
                        "record: removed without a config event, or its records were deleted",
                        st.L_index,
                        (sensor, st.L_text),
                    )
        ok = self.count - len(self.failed)
        self.run.passed("completeness", max(ok, 0))
        unchecked = sorted(s for s, st in self.states.items() if st.unchecked)
        if unchecked:
            shown = ", ".join(unchecked[:_MAX_NAMED])
            more = f" and {len(unchecked) - _MAX_NAMED} more" if len(unchecked) > _MAX_NAMED else ""
            notes.append(
                "silence not checked for sensors no boot or config event in this bundle "
                f"declares (8 f): {shown}{more}"
            )
        if self.bad_declarations:
            notes.append(
                f"{self.bad_declarations} sensor declaration(s) of boot or config events "
                "lack a usable allowance_s or repeat_s; those sensors are not checked for silence"
            )
        for sensor, st in sorted(self.states.items()):
            if st.late_gap:
                notes.append(
                    f"sensor {sensor}: {st.late_gap} reading(s) arrived after a gap record "
                    "declared them lost"
                )
            for excuse, n in sorted(st.excused.items()):
                notes.append(f"sensor {sensor}: {n} src_seq number(s) {_EXCUSES[excuse]}")
        if self.timeline_more:
            notes.append(
                f"{self.timeline_more} further notable event(s) are not in the timeline "
                f"(the first {MAX_TIMELINE} are)"
            )
        sensors = {
            s: _counts(st) for s, st in sorted(self.states.items()) if st.readings or st.gaps
        }
        return sensors, self.events, tuple(self.timeline)


_EXCUSES = {
    "restart": "skipped across a gateway restart were never logged and no gap record names "
    "them: the gateway keeps a node's count in memory only, and the time it was down is in "
    "its gateway-down gaps",
    "crash": "went missing shortly before the gateway stopped uncleanly and were never "
    "declared lost: it stopped while it was still waiting for them (its reorder window)",
    "start": "between its first ones in this bundle were not found and no gap record covers "
    "them: the bundle starts part-way through the log, so they may have been logged before "
    "its first entry",
}


def _counts(st: _SensorState) -> SensorCounts:
    qc: dict[str, int] = {}
    for pattern, n in st.qc.items():
        for digit in pattern:
            if digit != "-":
                qc[digit] = qc.get(digit, 0) + n
    return SensorCounts(
        st.readings,
        st.gaps,
        first=st.first if st.readings else None,
        last=st.last if st.readings else None,
        unsynced=st.unsynced,
        qc=dict(sorted(qc.items())),
        late=st.late,
        gap_spans=tuple(GapSpan(a, b, reason, n) for a, b, reason, n in st.spans),
        gap_spans_more=st.spans_more,
    )
