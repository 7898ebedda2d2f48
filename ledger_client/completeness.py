"""Step 8 of the checklist, completeness: fed every entry in log order, it finds what is
missing, out of order or unexplained — index holes, ``seq`` holes, lost ``src_seq``
numbers no gap record declares, and silences of declared sensors that no gap record
covers — and sums each sensor up for the report (docs/bundle-format.md §9 8 a–f).

State is bounded by the number of sensors and the windows below, never by entries.

The same class serves a follower that sees a log grow (riverseal_monitor): it
reports through any ``CompletenessSink`` (the checklist's run is one), takes
entries across calls, and ``extend_to`` moves the largest checkpoint as new ones
are verified; ``allowances`` and ``last_covered`` tell what step 8 f) expects of
each declared sensor right now.
"""

from __future__ import annotations

import bisect
import itertools
from datetime import datetime
from typing import Any, Protocol

from .errors import LedgerClientError
from .records import format_time, parse_time
from .report import (
    MAX_KEPT_FAILURES,
    NOTABLE_EVENTS,
    GapSpan,
    SensorCounts,
    TimelineEvent,
    _duration,
)

__all__ = [
    "MAX_GAP_SPANS",
    "MAX_TIMELINE",
    "SILENCE_TOLERANCE_S",
    "SRC_WINDOW",
    "Completeness",
    "CompletenessSink",
]


class CompletenessSink(Protocol):
    """Where step 8 reports: the verifier's run, or a monitor's collector of alerts."""

    @property
    def sizes(self) -> list[int]:
        """The checkpoint sizes known when the check starts, ascending."""
        ...

    @property
    def notes(self) -> list[str]: ...

    def fail(
        self,
        check: str,
        reason: str,
        entry: int | None = None,
        checkpoint: int | None = None,
        about: tuple[str | None, str | None, str | None] | None = None,
    ) -> None: ...

    def passed(self, check: str, n: int = 1) -> None: ...


_fromiso = datetime.fromisoformat

# --- step 8: completeness -----------------------------------------------------------------

SRC_WINDOW = 1000
"""8 d): a ``src_seq`` may arrive late while it lies within this many numbers of the
highest of its run; a number still missing further down is decided then. The gateway
declares a lost number by then at the latest (gateway/drivers/mqtt/source.py, REORDER_MAX_SEQS)."""
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

    def __init__(self, run: CompletenessSink, *, subset: bool = False) -> None:
        self.run = run
        self.subset = subset
        self.failed: set[int] = set()
        self.base: int | None = None
        """The index bit 0 of ``seen`` stands for (``compact`` moves it up)."""
        self.first_index: int | None = None
        """The first index fed: the bundle's (or the follower's) start."""
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
        self.clock_steps = 0
        """f) ``clock-step`` events whose step moved the covered instants."""
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

    def extend_to(self, size: int) -> None:
        """A larger checkpoint now covers entries below ``size`` (a follower's log grew)."""
        if self.largest is None or size > self.largest:
            self.largest = size

    def compact(self) -> None:
        """Forget which indexes below the highest were seen, when none is missing: a
        follower fed a growing log in order keeps a few bytes, not a bit per entry."""
        if self.highest is None or self.holes:
            return
        self.base = self.highest
        self.seen = bytearray(b"\x01")

    def allowances(self) -> dict[str, float]:
        """f) Each declared sensor's allowance in seconds, as its boot or config event says."""
        out = {}
        for sensor in self.declared:
            st = self.states.get(sensor)
            if st is not None and st.limit is not None:
                out[sensor] = st.limit - SILENCE_TOLERANCE_S
        return out

    def last_covered(self, sensor: str) -> tuple[float, str] | None:
        """f) The latest instant a reading or gap of ``sensor`` covers (seconds, text)."""
        st = self.states.get(sensor)
        if st is None or st.L is None:
            return None
        return st.L, st.L_text

    def _mark(self, i: int) -> bool:
        """Record index ``i`` as seen; False if it already was (or is out of reach)."""
        if self.base is None:
            self.base = self.first_index = i
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
            if excuse is None and st.first_run and (self.first_index or 0) > 0:
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
        elif name == "clock-step":
            self._clock_step(r, detail)
            item = TimelineEvent(index, r[7], name)
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

    def _clock_step(self, r: tuple[Any, ...], detail: dict[str, Any]) -> None:
        """f) The box's clock stepped by ``step_s``: what was covered moves with it, so
        silences are measured across the step in elapsed time (§4.2, ``clock-step``)."""
        step = detail.get("step_s")
        if isinstance(step, bool) or not isinstance(step, int | float) or not abs(step) < 1e12:
            return  # no usable step (negative is fine: backwards): nothing moves
        self.clock_steps += 1
        shift = float(step)
        for st in self.states.values():
            if st.L is not None:
                st.L += shift
                st.L_text = format_time(round(st.L * 1e9))
        # The event's time is the stepped clock's now: the latest time from here on.
        self.t_max = r[11]
        self.t_max_text = r[7]

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
        if self.clock_steps:
            notes.append(
                f"{self.clock_steps} clock-step event(s): the box says its clock stepped; "
                "silences across a step are judged in the time the box says elapsed (8 f)"
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


Completeness = _Completeness
"""The public name of step 8's state machine (``_Completeness`` is kept for the verifier)."""


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
