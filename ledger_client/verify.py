"""The bundle verifier: a fixed, numbered, fail-closed checklist.

``verify_bundle`` is pure: it takes a parsed ``Bundle``, the keys to trust and
the verification time, does no IO, never raises for anything a bundle holds,
and returns a ``Report``. It does not stop at the first problem: every failure
is collected, each naming the entry (or checkpoint), the check and the reason.
What it returns is in report.py (the Report and its verdict Level); step 8 is
completeness.py; the link to checkpoints kept from earlier bundles is lineage.py.

The steps, in order (docs/bundle-format.md §9 is the normative list):

1. keys          parse the bundle's device keys; trust the trust list if given,
                 else the bundle's own keys (reported as NOT independently trusted)
2. record        each entry is a canonical, well-formed record of this device
                 at the index the bundle puts it
3. signature     Ed25519 by the key the record names, at a time inside its window
4. inclusion     the entry's leaf hash and inclusion proof lead to the root of
                 the checkpoint it names, the smallest one that covers it
5. checkpoint    every checkpoint is signed by a trusted key, has this origin,
                 the sizes strictly ascend, and, when the trust file sets a
                 witness policy of k, it carries valid cosignature/v1 lines
                 from at least k of the trusted witnesses (witness.py)
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
from typing import Any, NamedTuple, Protocol

import nacl.signing

from .anchors import AnchorChecker
from .bundle import AnchorReceipt, Bundle, ConsistencyProof, DeviceKey
from .checkpoint import Checkpoint
from .completeness import _Completeness
from .errors import LedgerClientError, MalformedProof, ProofError, RecordError
from .lineage import KeptCheckpoint, Lineage, SignedCheckpoint
from .merkle import HASH_SIZE, verify_consistency, verify_inclusion
from .note import Verifier, open_note, split_note
from .records import Entry, parse_entry, parse_time
from .report import (
    _STEP_NUMBER,
    LOCAL_STATUS,
    MAX_KEPT_FAILURES,
    NOTABLE_EVENTS,
    STEPS,
    UNCHECKED_STATUS,
    VERIFIED_STATUS,
    AnchorResult,
    Failure,
    Fork,
    GapSpan,
    Level,
    RecordedBy,
    Report,
    SensorCounts,
    StepResult,
    TimelineEvent,
)
from .trust import TrustedKey, TrustList
from .witness import WitnessKey, cosignatures

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

KNOWN_BACKEND_FAMILIES = ("evm:", "rfc3161:")
"""Label prefixes of the independent backends (docs/bundle-format.md §7); an anchor
of any other kind fails rather than passing as "unchecked"."""


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
    witnesses: tuple[WitnessKey, ...] = ()
    witness_policy: int = 0
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
        if isinstance(trusted, TrustList) and trusted.witness_policy:
            run.witnesses, run.witness_policy = trusted.witnesses, trusted.witness_policy
            run.notes.append(
                f"witness policy: every checkpoint needs cosignatures from "
                f"{trusted.witness_policy} of {len(trusted.witnesses)} trusted witness(es)"
            )
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
        if run.witness_policy and not _witnessed(run, note, cp):
            ok = False
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


def _witnessed(run: _Run, note: str, cp: Checkpoint) -> bool:
    """Step 5's witness policy: k valid cosignatures by distinct trusted witnesses."""
    found, problems = cosignatures(note, run.witnesses)
    k = run.witness_policy
    for problem in problems:
        run.fail("checkpoint", f"checkpoint {cp.size}: {problem}", checkpoint=cp.size)
    if len(found) >= k:
        return not problems
    have = {c.witness.key_id for c in found}
    missing = ", ".join(w.to_vkey() for w in run.witnesses if w.key_id not in have)
    run.fail(
        "checkpoint",
        f"checkpoint {cp.size} has {len(found)} valid witness cosignature(s), the policy "
        f"needs {k} of {len(run.witnesses)}; missing: {missing}",
        checkpoint=cp.size,
    )
    return False


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
