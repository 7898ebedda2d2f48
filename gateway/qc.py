"""Real-time QARTOD quality control at the edge: flags, never filters.

Each value of each reading is checked before it is signed, and the flags go
into the signed record (docs/bundle-format.md §4.2). A reading that fails is
flagged, never dropped. Flags are the IOOS QARTOD ones::

    1 pass    2 not evaluated    3 suspect    4 fail    9 missing

Tests, per (sensor, quantity), with the limits of ``config.qc.QcLimits``:

gross_range     outside ``fail_span`` → 4; outside ``suspect_span`` → 3. The
                span ends themselves pass.
spike           the real-time variant: an edge cannot see the next reading, so
                the current value is compared with the mean of the two before
                it: ``|v − (v₋₁ + v₋₂)/2|`` above ``spike_fail`` → 4, above
                ``spike_suspect`` → 3 (equal passes); fewer than two previous
                values → 2. The two readings after a spike are compared with a
                mean that holds it, at half its height, so they may be flagged
                too (a lesser flag): the flags mark the neighbourhood. A real
                step change is flagged for its first two readings, then passes.
rate_of_change  ``|v − v₋₁|`` above ``rate_of_change_sd`` standard deviations
                (sample SD) of the values in the last
                ``rate_of_change_window_s`` → 3 (QARTOD has no fail level here);
                a step up to ``rate_of_change_floor`` is never flagged; fewer
                than ``rate_of_change_min_samples`` values in the window → 2.
flat_line       the current value and the ``flat_line_fail`` previous ones all
                closer than ``flat_line_tolerance`` (strictly) → 4; the
                ``flat_line_suspect`` previous ones → 3; a run that is still
                shorter than ``flat_line_suspect`` for lack of history → 2.

In the record a value carries ``"qc": {"flag": F, "tests": "GSRL"}``: the
aggregate flag and one digit per test, in the order above (``QC_TESTS``).

The aggregate flag is the worst by QARTOD precedence, as ioos-qc's
``qartod_compare`` orders them: fail > suspect > pass > not evaluated >
missing. A value that is NaN or infinite is missing: every test gives 9.

History lives in memory only. After a restart (or a silence longer than the
rate-of-change window) it refills from nothing, and the tests that need it
report 2 until it has. Values that fail the gross range test, and missing
values, never enter the history: they are not measurements of the river.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from .config.qc import QC_TESTS, QcConfig, QcLimits

__all__ = [
    "FAIL",
    "FLAGS",
    "MAX_WINDOW_SAMPLES",
    "MISSING",
    "NOT_EVALUATED",
    "PASS",
    "QC_TESTS",
    "SUSPECT",
    "QcEngine",
    "QcResult",
    "Stream",
    "aggregate",
    "flat_line",
    "gross_range",
    "rate_of_change",
    "result_of",
    "spike",
]

PASS: Final = 1
NOT_EVALUATED: Final = 2
SUSPECT: Final = 3
FAIL: Final = 4
MISSING: Final = 9
FLAGS: Final = frozenset({PASS, NOT_EVALUATED, SUSPECT, FAIL, MISSING})

MAX_WINDOW_SAMPLES: Final = 2048
"""Most values one stream keeps for the rate-of-change SD (bounds memory on fast sensors)."""

# Precedence, lowest first (ioos-qc qartod_compare).
_RANK: Final = {MISSING: 0, NOT_EVALUATED: 1, PASS: 2, SUSPECT: 3, FAIL: 4}
_RESUM_EVERY: Final = 4096  # re-add the running sums now and then: float drift


# --- the tests, pure -------------------------------------------------------------------------


def gross_range(
    value: float, fail_span: tuple[float, float] | None, suspect_span: tuple[float, float] | None
) -> int:
    """QARTOD gross range: sensor span → fail, user span → suspect."""
    if not math.isfinite(value):
        return MISSING
    if fail_span is None and suspect_span is None:
        return NOT_EVALUATED
    if fail_span is not None and not fail_span[0] <= value <= fail_span[1]:
        return FAIL
    if suspect_span is not None and not suspect_span[0] <= value <= suspect_span[1]:
        return SUSPECT
    return PASS


def spike(
    value: float,
    prev1: float | None,
    prev2: float | None,
    suspect: float | None,
    fail: float | None,
) -> int:
    """Real-time spike: distance from the mean of the two previous values."""
    if not math.isfinite(value):
        return MISSING
    if prev1 is None or prev2 is None or (suspect is None and fail is None):
        return NOT_EVALUATED
    d = abs(value - (prev1 + prev2) / 2)
    if fail is not None and d > fail:
        return FAIL
    if suspect is not None and d > suspect:
        return SUSPECT
    return PASS


def rate_of_change(
    value: float,
    prev: float | None,
    sd: float | None,
    n_sd: float | None,
    floor: float = 0.0,
) -> int:
    """QARTOD rate of change: the step from ``prev`` against ``n_sd`` × ``sd``."""
    if not math.isfinite(value):
        return MISSING
    if prev is None or sd is None or n_sd is None:
        return NOT_EVALUATED
    return SUSPECT if abs(value - prev) > max(n_sd * sd, floor) else PASS


def flat_line(
    value: float,
    previous: Iterable[float],
    suspect_count: int | None,
    fail_count: int | None,
    tolerance: float | None,
) -> int:
    """QARTOD flat line; ``previous`` runs newest first."""
    if not math.isfinite(value):
        return MISSING
    if tolerance is None or (suspect_count is None and fail_count is None):
        return NOT_EVALUATED
    if suspect_count is None or fail_count is None:
        need = suspect_count or fail_count or 0
    else:
        need = max(suspect_count, fail_count)
    run = 0
    for p in previous:
        if not abs(value - p) < tolerance:
            break
        run += 1
        if run >= need:
            break
    else:
        # History ran out inside the run: a longer one may be hiding before it.
        if suspect_count is None or run < suspect_count:
            return NOT_EVALUATED
    if fail_count is not None and run >= fail_count:
        return FAIL
    if suspect_count is not None and run >= suspect_count:
        return SUSPECT
    return PASS


def aggregate(flags: Iterable[int]) -> int:
    """The worst flag by QARTOD precedence; no flags at all: not evaluated."""
    return max(flags, key=_RANK.__getitem__, default=NOT_EVALUATED)


# --- state per (sensor, quantity) --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QcResult:
    """The flags of one value: the aggregate and each test's, in ``QC_TESTS`` order."""

    flag: int
    tests: tuple[int, int, int, int]
    record: dict[str, Any] = field(compare=False, repr=False)
    """The ``qc`` member of a value in a signed record: the aggregate flag, and one
    digit per test in ``QC_TESTS`` order, e.g. ``{"flag": 1, "tests": "1121"}``
    (gross range 1, spike 1, rate of change 2, flat line 1). Shared between
    results: read it, never change it."""


_RESULTS: dict[tuple[int, int, int, int], QcResult] = {}


def result_of(tests: tuple[int, int, int, int]) -> QcResult:
    """The shared result for these test flags (few combinations occur)."""
    r = _RESULTS.get(tests)
    if r is None:
        flag = aggregate(tests)
        # A string of digits, not an object of names: encoding the record before
        # signing is the append path's largest cost, and this keeps it small.
        record = {"flag": flag, "tests": "".join(map(str, tests))}
        r = _RESULTS[tests] = QcResult(flag, tests, record)
    return r


MISSING_RESULT: Final = result_of((MISSING,) * 4)
UNEVALUATED_RESULT: Final = result_of((NOT_EVALUATED,) * 4)


class Stream:
    """The history of one sensor's quantity, and its tests run on each new value."""

    __slots__ = (
        "_n_since_resum",
        "_s1",
        "_s2",
        "_same",
        "_shift",
        "_ts",
        "_vs",
        "_window_ns",
        "limits",
        "recent",
    )

    def __init__(self, limits: QcLimits) -> None:
        self.limits = limits
        self.recent: deque[float] = deque(
            maxlen=max(2, limits.flat_line_suspect or 0, limits.flat_line_fail or 0)
        )
        self._ts: deque[int] = deque()
        self._vs: deque[float] = deque()
        self._shift = 0.0
        self._s1 = 0.0
        self._s2 = 0.0
        self._n_since_resum = 0
        self._window_ns = int(limits.rate_of_change_window_s * 1e9)
        self._same = 0  # how many of the newest values in `recent` equal the newest exactly

    def _window_sd(self) -> float | None:
        n = len(self._vs)
        if n < max(2, self.limits.rate_of_change_min_samples):
            return None
        var = (self._s2 - self._s1 * self._s1 / n) / (n - 1)
        return math.sqrt(var) if var > 0 else 0.0

    def _expire(self, t_ns: int) -> None:
        horizon = t_ns - self._window_ns
        ts, vs = self._ts, self._vs
        while ts and (ts[0] < horizon or len(ts) >= MAX_WINDOW_SAMPLES):
            ts.popleft()
            d = vs.popleft() - self._shift
            self._s1 -= d
            self._s2 -= d * d
            self._n_since_resum += 1
        if not ts:
            self.recent.clear()  # silent for a whole window: the history is stale
            self._s1 = self._s2 = 0.0
            self._n_since_resum = 0
        elif self._n_since_resum >= _RESUM_EVERY:
            self._s1 = sum(v - self._shift for v in vs)
            self._s2 = sum((v - self._shift) ** 2 for v in vs)
            self._n_since_resum = 0

    def _flat_line(self, value: float) -> int:
        """``flat_line`` over the history, without rescanning it for a stuck sensor.

        A sensor repeating one value exactly is the common flat line, and the
        full scan would cost up to ``need`` comparisons per reading: when the
        last ``need`` values all equal this one, the verdict is known.
        """
        q = self.limits
        counts = [c for c in (q.flat_line_suspect, q.flat_line_fail) if c is not None]
        tol = q.flat_line_tolerance
        recent = self.recent
        stuck = bool(counts) and bool(recent) and value == recent[-1]
        if stuck and tol is not None and tol > 0 and min(self._same, len(recent)) >= max(counts):
            return FAIL if q.flat_line_fail is not None else SUSPECT
        return flat_line(value, reversed(recent), q.flat_line_suspect, q.flat_line_fail, tol)

    def check(self, t_ns: int, value: float) -> QcResult:
        """Flag ``value`` received at ``t_ns`` and, if it is a measurement, remember it."""
        if not math.isfinite(value):
            return MISSING_RESULT
        q = self.limits
        ts = self._ts
        if ts and (ts[0] < t_ns - self._window_ns or len(ts) >= MAX_WINDOW_SAMPLES):
            self._expire(t_ns)
        recent = self.recent
        n = len(recent)
        prev1 = recent[-1] if n else None
        prev2 = recent[-2] if n >= 2 else None
        tests = (
            gross_range(value, q.fail_span, q.suspect_span),
            spike(value, prev1, prev2, q.spike_suspect, q.spike_fail),
            rate_of_change(
                value, prev1, self._window_sd(), q.rate_of_change_sd, q.rate_of_change_floor
            ),
            self._flat_line(value),
        )
        if tests[0] != FAIL:
            self._same = self._same + 1 if n and value == recent[-1] else 1
            recent.append(value)
            if not ts:
                self._shift = value  # sums of offsets from a nearby value stay accurate
            ts.append(t_ns)
            d = value - self._shift
            self._vs.append(value)
            self._s1 += d
            self._s2 += d * d
        return result_of(tests)


class QcEngine:
    """Streams per (sensor, quantity), created on first sight, and flag counts per sensor."""

    def __init__(self, config: QcConfig | None = None) -> None:
        self.config = config if config is not None else QcConfig()
        self._streams: dict[tuple[str, str, str], Stream | None] = {}
        self.counts: dict[str, Counter[int]] = {}
        """Aggregate flags of committed values, per sensor (the caller counts them)."""

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def check(self, sensor: str, quantity: str, unit: str, t_ns: int, value: float) -> QcResult:
        """Flags for one value; updates that stream's history."""
        if not math.isfinite(value):
            return MISSING_RESULT
        key = (sensor, quantity, unit)
        try:
            stream = self._streams[key]
        except KeyError:
            limits = self.config.limits(sensor, quantity)
            units = {u.lower() for u in limits.units}
            stream = Stream(limits) if not units or unit.lower() in units else None
            self._streams[key] = stream
        if stream is None:  # limits written for another unit: not evaluated
            return UNEVALUATED_RESULT
        return stream.check(t_ns, value)

    def count(self, sensor: str, flag: int, n: int = 1) -> None:
        """Count ``n`` committed values of ``sensor`` whose aggregate flag is ``flag``."""
        c = self.counts.get(sensor)
        if c is None:
            c = self.counts[sensor] = Counter()
        c[flag] += n

    def forget(self, sensors: Iterable[str]) -> None:
        """Drop the history of these sensors (after a failed commit it may hold values
        that never reached the log); it refills as after a restart."""
        gone = set(sensors)
        for key in [k for k in self._streams if k[0] in gone]:
            del self._streams[key]

    def flag_counts(self) -> MappingProxyType[str, dict[str, int]]:
        """Per sensor, aggregate flag → number of values (for status.json)."""
        return MappingProxyType(
            {s: {str(f): n for f, n in sorted(c.items())} for s, c in self.counts.items()}
        )
