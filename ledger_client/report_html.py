"""A verification report a person reads: one self-contained HTML page (``--html FILE``).

``HtmlReport(path)`` is an EntryObserver: while the checklist runs it keeps, per
sensor, counts, gap spans and each quantity's values downsampled into at most
MAX_BUCKETS time buckets (the smallest and largest value of each, and the flagged
values), so memory does not grow with the number of entries. ``finish(report,
source_name)`` writes the page: the verdict, the summary, the checklist, every
failure, per sensor a table and one inline SVG chart per quantity (QARTOD suspect
and fail values marked, gaps shaded with their reason, failed entries marked), and
the anchoring timeline. No script, font, image or stylesheet is fetched; every
string that comes from the bundle is escaped. docs/verify-reports.md describes it.
"""

from __future__ import annotations

import bisect
import contextlib
import html
import itertools
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from .errors import LedgerClientError
from .records import parse_time
from .report_csv import unproven_reason

__all__ = [
    "MAX_BUCKETS",
    "MAX_GAP_SPANS",
    "MAX_LISTED_GAPS",
    "MAX_SENSORS",
    "MAX_SERIES_PER_SENSOR",
    "Buckets",
    "GapSpans",
    "HtmlReport",
]

MAX_BUCKETS = 2000
"""Time buckets per quantity of a sensor (and per kind of flagged value)."""
MAX_SENSORS = 64
"""Sensors charted; the entries of further ones are only counted."""
MAX_SERIES_PER_SENSOR = 12
"""(quantity, unit) pairs charted per sensor; values of further ones are only counted."""
MAX_GAP_SPANS = 500
"""Shaded gap spans per sensor; beyond it the closest neighbouring spans merge."""
MAX_LISTED_GAPS = 100
"""Gap records listed (start, end, reason) per sensor; all are counted and shaded."""
MAX_FAILURE_MARKS = 200
"""Failed entries marked on one sensor's charts (all are listed)."""
CHART_COLUMNS = 600
"""Columns a chart draws across (about one per pixel of a desktop page): buckets merge
into them when drawn."""
MAX_TEXT = 200
"""Characters of one bundle string shown; longer ones end in an ellipsis."""

_EPOCH = date(1970, 1, 1).toordinal()
_DAY_US = 86_400_000_000


# --- time ------------------------------------------------------------------------------


_days: dict[str, int] = {}


def _micros(key: str) -> int | None:
    """Microseconds since 1970 of a 27-character time key (YYYY-MM-DDTHH:MM:SS.ffffffZ)."""
    day = key[:10]
    base = _days.get(day)
    try:
        if base is None:
            base = (date.fromisoformat(day).toordinal() - _EPOCH) * _DAY_US
            if len(_days) >= 4096:
                _days.clear()
            _days[day] = base
        return (
            base
            + int(key[11:13]) * 3_600_000_000
            + int(key[14:16]) * 60_000_000
            + int(key[17:19]) * 1_000_000
            + int(key[20:26])
        )
    except ValueError:
        return None


def _micros_of(text: str | None) -> int | None:
    """Microseconds of any RFC 3339 UTC time a record may hold, None if it is not one."""
    if text is None:
        return None
    if len(text) == 27:
        return _micros(text)
    try:
        when = parse_time(text)
    except LedgerClientError:
        return None
    return (when.date().toordinal() - _EPOCH) * _DAY_US + (
        (when.hour * 3600 + when.minute * 60 + when.second) * 1_000_000 + when.microsecond
    )


def _when(us: int) -> str:
    """A time for a person: ``2026-03-01 10:00:20Z`` (with a fraction when it has one)."""
    when = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
    text = when.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{when.microsecond:06d}Z" if when.microsecond else text + "Z"


# --- bounded summaries -----------------------------------------------------------------


class Buckets:
    """Values over time in at most MAX_BUCKETS buckets of one width, a power of two of
    microseconds. Each bucket keeps its count, its sum, and its smallest and largest
    value with their times. When a time arrives that more buckets would be needed for, the width
    doubles and neighbouring buckets merge pairwise, as often as it takes."""

    __slots__ = ("cells", "hi", "limit", "lo", "origin", "shift")

    def __init__(self, origin: int, limit: int = MAX_BUCKETS) -> None:
        self.origin = origin
        self.shift = 0
        self.limit = limit
        self.cells: dict[int, list[Any]] = {}  # k -> [n, t_min, v_min, t_max, v_max, sum]
        self.lo = 0
        self.hi = 0

    def add(self, t: int, v: float) -> None:
        k = (t - self.origin) >> self.shift
        cell = self.cells.get(k)
        if cell is not None:
            cell[0] += 1
            cell[5] += v
            if v < cell[2]:
                cell[1] = t
                cell[2] = v
            elif v > cell[4]:
                cell[3] = t
                cell[4] = v
            return
        if not self.cells:
            self.lo = self.hi = k
        elif k < self.lo or k > self.hi:
            self._widen(min(k, self.lo), max(k, self.hi))
            k = (t - self.origin) >> self.shift
            cell = self.cells.get(k)
            if cell is not None:
                self.cells[k] = _merge(cell, [1, t, v, t, v, v])
                return
        self.cells[k] = [1, t, v, t, v, v]

    def _widen(self, lo: int, hi: int) -> None:
        d = 0
        while (hi >> d) - (lo >> d) >= self.limit:
            d += 1
        if d:
            merged: dict[int, list[Any]] = {}
            for k, cell in self.cells.items():
                nk = k >> d
                other = merged.get(nk)
                merged[nk] = cell if other is None else _merge(other, cell)
            self.cells = merged
            self.shift += d
        self.lo, self.hi = lo >> d, hi >> d

    def points(self) -> list[list[Any]]:
        """The buckets in time order: [n, t_min, v_min, t_max, v_max, sum] each."""
        return [self.cells[k] for k in sorted(self.cells)]

    def columns(self, limit: int) -> list[tuple[int, int, list[Any]]]:
        """The buckets merged into at most ``limit`` wider ones (of a power-of-two
        multiple of the width), in time order: (start, end, bucket) each."""
        d = 0
        while (self.hi >> d) - (self.lo >> d) >= limit:
            d += 1
        merged: dict[int, list[Any]] = {}
        for k, cell in self.cells.items():
            other = merged.get(k >> d)
            merged[k >> d] = cell if other is None else _merge(other, cell)
        width = 1 << (self.shift + d)
        return [
            (self.origin + k * width, self.origin + (k + 1) * width, merged[k])
            for k in sorted(merged)
        ]

    @property
    def count(self) -> int:
        return sum(c[0] for c in self.cells.values())


def _merge(a: list[Any], b: list[Any]) -> list[Any]:
    lo = (a[1], a[2]) if a[2] <= b[2] else (b[1], b[2])
    hi = (a[3], a[4]) if a[4] >= b[4] else (b[3], b[4])
    return [a[0] + b[0], lo[0], lo[1], hi[0], hi[1], a[5] + b[5]]


@dataclass
class _Span:
    start: int
    end: int
    count: int
    reasons: dict[str, int]

    def absorb(self, other: _Span) -> None:
        self.start = min(self.start, other.start)
        self.end = max(self.end, other.end)
        self.count += other.count
        for r, n in other.reasons.items():
            _add_reason(self.reasons, r, n)


_OTHER = "\x00other"
_MAX_REASONS = 4


def _add_reason(reasons: dict[str, int], reason: str, n: int = 1) -> None:
    if reason in reasons or len(reasons) < _MAX_REASONS:
        reasons[reason] = reasons.get(reason, 0) + n
    else:
        reasons[_OTHER] = reasons.get(_OTHER, 0) + n


class GapSpans:
    """One sensor's gap spans as disjoint intervals in time order (overlapping and
    touching gaps join). Beyond ``limit`` intervals, the ones closest to each other
    merge, so a shaded span may then also cover short stretches between gaps; each
    keeps how many gap records it holds and their reasons."""

    def __init__(self, limit: int = MAX_GAP_SPANS) -> None:
        self.limit = limit
        self.spans: list[_Span] = []
        self.starts: list[int] = []

    def add(self, start: int, end: int, reason: str) -> None:
        new = _Span(start, end, 1, {reason[:MAX_TEXT]: 1})
        spans, starts = self.spans, self.starts
        at = bisect.bisect_right(starts, start)
        if at > 0 and spans[at - 1].end >= start:  # joins the one before
            at -= 1
            spans[at].absorb(new)
        else:
            spans.insert(at, new)
            starts.insert(at, start)
        span = spans[at]
        while at + 1 < len(spans) and spans[at + 1].start <= span.end:
            span.absorb(spans.pop(at + 1))
            starts.pop(at + 1)
        starts[at] = span.start
        if len(spans) > 2 * self.limit:
            self._reduce()

    def _reduce(self) -> None:
        spans = self.spans
        seps = sorted(spans[i + 1].start - spans[i].end for i in range(len(spans) - 1))
        merges = len(spans) - self.limit
        threshold = seps[merges - 1]
        out = [spans[0]]
        for s in spans[1:]:
            if merges > 0 and s.start - out[-1].end <= threshold:
                out[-1].absorb(s)
                merges -= 1
            else:
                out.append(s)
        self.spans = out
        self.starts = [s.start for s in out]

    def between(self, a: int, b: int) -> bool:
        """Whether a span lies (at least partly) strictly between times a < b."""
        at = bisect.bisect_right(self.starts, a)
        if at > 0 and self.spans[at - 1].end > a:
            return True
        return at < len(self.spans) and self.spans[at].start < b


# --- what the observer keeps -----------------------------------------------------------


class _Series:
    __slots__ = ("fail", "missing", "quantity", "suspect", "unit", "values")

    def __init__(self, quantity: str, unit: str) -> None:
        self.quantity = quantity
        self.unit = unit
        self.values: Buckets | None = None
        self.suspect: Buckets | None = None
        self.fail: Buckets | None = None
        self.missing: Buckets | None = None


_FLAG_KEYS: tuple[int | None, ...] = (1, 2, 3, 4, 9, None)
_FLAG_NAMES = {
    1: "1 pass",
    2: "2 not evaluated",
    3: "3 suspect",
    4: "4 fail",
    9: "9 missing",
    None: "no flag",
}


@dataclass
class _Sensor:
    name: str
    readings: int = 0
    gaps: int = 0
    unverified: int = 0
    first: str | None = None
    last: str | None = None
    tmin: int | None = None
    tmax: int | None = None
    flags: dict[int | None, int] = field(default_factory=lambda: dict.fromkeys(_FLAG_KEYS, 0))
    series: dict[tuple[str, str], _Series] = field(default_factory=dict)
    uncharted_values: int = 0
    spans: GapSpans = field(default_factory=GapSpans)
    listed_gaps: list[tuple[str, str, str]] = field(default_factory=list)

    def span(self, t: int) -> None:
        if self.tmin is None or t < self.tmin:
            self.tmin = t
        if self.tmax is None or t > self.tmax:
            self.tmax = t


class HtmlReport:
    """Writes one verification as a self-contained HTML page at ``path``.

    Pass it as the ``observer`` of ``verify_source``, then call
    ``finish(report, source_name)``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.sensors: dict[str, _Sensor] = {}
        self.uncharted_entries = 0  # entries of sensors beyond MAX_SENSORS
        self.unreadable = 0
        self.events = 0
        self.no_values = False

    def entry(self, index: int, rec: tuple[Any, ...] | None, ok: bool) -> None:
        """One entry, in log order (EntryObserver)."""
        if rec is None:
            self.unreadable += 1
            return
        kind = rec[1]
        if kind == "event":
            self.events += 1
            return
        name = rec[2]
        st = self.sensors.get(name)
        if st is None:
            if len(self.sensors) >= MAX_SENSORS or not isinstance(name, str):
                self.uncharted_entries += 1
                return
            st = self.sensors[name] = _Sensor(name)
        if not ok:
            st.unverified += 1
            return
        if kind == "gap":
            self._gap(st, rec[9])
            return
        t = _micros(rec[6])
        if t is None:
            return
        key = rec[6]
        st.readings += 1
        if st.first is None or key < st.first:
            st.first = key
        if st.last is None or key > st.last:
            st.last = key
        st.span(t)
        values = rec[10]
        if values is None:  # no values were asked for: the flags are still known
            self.no_values = True
            for digit in rec[9]:
                flag = None if digit == "-" else int(digit)
                st.flags[flag] = st.flags.get(flag, 0) + 1
            return
        for quantity, unit, v, flag in values:
            if v is None:
                flag = 9
            st.flags[flag] = st.flags.get(flag, 0) + 1
            series = st.series.get((quantity, unit))
            if series is None:
                if len(st.series) >= MAX_SERIES_PER_SENSOR:
                    st.uncharted_values += 1
                    continue
                series = st.series[(quantity, unit)] = _Series(quantity, unit)
            if v is None:
                if series.missing is None:
                    series.missing = Buckets(t)
                series.missing.add(t, 0.0)
                continue
            v = float(v)
            if series.values is None:
                series.values = Buckets(t)
            series.values.add(t, v)
            if flag == 3:
                if series.suspect is None:
                    series.suspect = Buckets(t)
                series.suspect.add(t, v)
            elif flag == 4:
                if series.fail is None:
                    series.fail = Buckets(t)
                series.fail.add(t, v)

    def _gap(self, st: _Sensor, extra: Any) -> None:
        reason, from_key, to_key = extra
        st.gaps += 1
        start, end = _micros(from_key), _micros(to_key)
        if start is None or end is None:
            return
        st.spans.add(start, end, str(reason))
        st.span(start)
        st.span(end)
        if len(st.listed_gaps) < MAX_LISTED_GAPS:
            st.listed_gaps.append((from_key, to_key, str(reason)))

    def finish(self, report: Any, source_name: str) -> None:
        """Write the page for ``report`` (a verify.Report) of ``source_name``."""
        page = _Page(self, report, source_name).render()
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            with tmp.open("w", encoding="utf-8", errors="backslashreplace") as f:
                f.write(page)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise


# --- the page --------------------------------------------------------------------------


_CONTROLS = {i: "\ufffd" for i in (*range(0x20), 0x7F) if i not in (0x09, 0x0A)}


def _e(x: Any, limit: int = MAX_TEXT) -> str:
    """``x`` as text safe in HTML content and attribute values (and SVG in HTML)."""
    text = str(x)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return html.escape(text.translate(_CONTROLS), quote=True)


def _b(x: Any) -> str:
    """A bundle string in running text, isolated from the text around it (bidi)."""
    return f"<bdi>{_e(x)}</bdi>"


def _num(v: float) -> str:
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) < 1e15):
        return str(int(v))
    return f"{v:.6g}"


def _level(report: Any) -> tuple[str, str]:
    """(headline, css class) of the verdict."""
    level = getattr(report, "level", None)
    clean = report.failure_count == 0
    if level is None:
        return ("VERIFIED", "ok") if clean else ("FAILED", "bad")
    headline = getattr(level, "headline", None)
    value = getattr(level, "value", level)
    if not isinstance(headline, str):
        headline = str(value).upper() if isinstance(value, str) else str(level)
    if not clean:
        return headline, "bad"
    return headline, "ok" if value == "verified" else "warn"


_CSS = """
:root{--ok:#1b7a34;--bad:#b3261e;--warn:#9a6700;--ink:#1d1d1f;--dim:#5f6368;
--line:#1f5fbf;--gap:#c9ccd1;--suspect:#e07b00;--fail:#c5221f}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);
margin:0 auto;padding:12px;max-width:980px;background:#fff;overflow-wrap:anywhere}
h1{font-size:1.35em;margin:.2em 0 .6em}h2{font-size:1.15em;margin:1.4em 0 .5em;
border-bottom:1px solid #ddd;padding-bottom:.2em}h3{font-size:1.05em;margin:1.2em 0 .4em}
h4{font-size:.95em;margin:.8em 0 .1em}
.verdict{border-radius:8px;padding:10px 14px;color:#fff;margin-bottom:1em}
.verdict strong{font-size:1.4em;display:block;letter-spacing:.02em}
.verdict.ok{background:var(--ok)}.verdict.bad{background:var(--bad)}
.verdict.warn{background:var(--warn)}
table{border-collapse:collapse;margin:.3em 0;font-size:.92em;max-width:100%}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f4f5f7;font-weight:600}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:var(--ok);font-weight:700}.no{color:var(--bad);font-weight:700}
.caveat{border-left:4px solid var(--bad);background:#fdf0ef;padding:6px 10px}
.note{color:var(--dim)}
ol.failures li{margin:.2em 0;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.88em}
.chart{margin:.2em 0 .9em}
.chart svg{width:100%;height:auto;display:block;border:1px solid #e3e3e3;background:#fcfcfd}
.range{display:flex;justify-content:space-between;color:var(--dim);font-size:.8em}
.legend span{display:inline-block;margin-right:1em;white-space:nowrap;font-size:.88em}
.sw{display:inline-block;width:14px;height:10px;margin-right:4px;vertical-align:middle}
svg .val{fill:none;stroke:var(--line);stroke-width:1.4;stroke-linejoin:round;
stroke-linecap:round;vector-effect:non-scaling-stroke}
svg .band{fill:var(--line);fill-opacity:.2}
svg .gap{fill:var(--gap);fill-opacity:.65}
svg .suspect{fill:var(--suspect);stroke:#fff;stroke-width:.6}
svg .fail{fill:var(--fail);stroke:#fff;stroke-width:.6}
svg .missing{fill:#80868b}
svg .failed{stroke:var(--fail);stroke-width:1.2;stroke-dasharray:4 3}
svg .axis{stroke:#bbb;stroke-width:1}
svg .cp{stroke:#555;stroke-width:1}
svg .rec{fill:var(--ok);fill-opacity:.55}
svg .a-verified{fill:var(--ok)}svg .a-local{fill:#80868b}svg .a-unchecked{fill:var(--warn)}
svg .a-failed{fill:var(--fail)}
"""

# chart geometry (SVG user units; the SVG scales to the page width)
_W, _H = 600.0, 130.0
_X0, _X1, _Y0, _Y1 = 4.0, 596.0, 8.0, 120.0


class _Page:
    def __init__(self, obs: HtmlReport, report: Any, source: str) -> None:
        self.obs = obs
        self.r = report
        self.source = source
        self.parts: list[str] = []

    def w(self, *text: str) -> None:
        self.parts.extend(text)

    def render(self) -> str:
        r = self.r
        headline, css = _level(r)
        self.w(
            "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>",
            "<meta name='viewport' content='width=device-width, initial-scale=1'>",
            # Nothing may load or run, even if a string escaped its escaping.
            "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
            "style-src 'unsafe-inline'\">",
            f"<title>{_e(headline)}: riverseal bundle {_e(self.source)}</title>",
            f"<style>{_CSS}</style></head><body>",
            "<h1>riverseal verification report</h1>",
        )
        self.verdict(headline, css)
        self.summary()
        self.failures()
        self.checklist()
        self.notes()
        self.sensors()
        self.anchoring()
        self.w(
            f"<p class='note'>Checked at {_e(r.checked_at)} by ledger-verify. ",
            "docs/verify-reports.md explains this page.</p></body></html>\n",
        )
        return "".join(self.parts)

    # --- verdict and summary

    def verdict(self, headline: str, css: str) -> None:
        r = self.r
        if r.failure_count:
            line = f"{r.failure_count} problem(s) found; the failures are listed below."
        else:
            line = (
                f"{r.entries} entries from device {_b(r.device)}, "
                f"{_e(r.first_time or '?')} to {_e(r.last_time or '?')}"
            )
            if not r.keys_trusted:
                line += " — the keys came from the bundle itself and are NOT independently trusted"
        self.w(
            f"<div class='verdict {css}' id='verdict'><strong>{_e(headline)}</strong>",
            f"{line}</div>",
        )

    def summary(self) -> None:
        r = self.r
        rows: list[tuple[str, str]] = [
            ("Bundle", _b(self.source)),
            ("Device", _b(r.device)),
            ("Origin", _b(r.origin)),
            ("Entries", f"{r.entries:,}"),
        ]
        if r.first_index is not None:
            rows.append(("Entry range", f"{r.first_index} – {r.last_index}"))
        if r.first_time is not None:
            rows.append(("Times", f"{_e(r.first_time)} – {_e(r.last_time)}"))
        trusted = (
            "<span class='pass'>trusted</span> (from your trust file)"
            if r.keys_trusted
            else "<span class='no'>NOT independently trusted</span> (taken from the bundle)"
        )
        keys = ", ".join(_e(k) for k in r.keys) or "none"
        rows.append(("Keys", f"{keys} — {trusted}"))
        if r.ignored_keys:
            rows.append(("Keys ignored", ", ".join(_e(k) for k in r.ignored_keys)))
        cps = ", ".join(str(c) for c in r.checkpoints) or "none"
        rows.append(("Checkpoint sizes", cps))
        rows.append(("Events", str(r.events)))
        self.w("<h2>Summary</h2><table>")
        for k, v in rows:
            self.w(f"<tr><th>{k}</th><td>{v}</td></tr>")
        self.w("</table>")

    def failures(self) -> None:
        r = self.r
        if not r.failure_count:
            return
        self.w(f"<h2 id='failures'>Failures ({r.failure_count})</h2><ol class='failures'>")
        for f in r.failures:
            self.w(f"<li>{_e(f.described(), 2000)}</li>")
        self.w("</ol>")
        more = r.failure_count - len(r.failures)
        if more > 0:
            self.w(f"<p>… and {more} more failure(s), counted but not listed.</p>")

    def checklist(self) -> None:
        self.w(
            "<h2>Checklist</h2><table><tr><th>#</th><th>step</th><th></th>"
            "<th>passed</th><th>failed</th><th>skipped</th></tr>"
        )
        for s in self.r.steps:
            mark = "<span class='pass'>✓</span>" if s.ok else "<span class='no'>✗</span>"
            self.w(
                f"<tr><td class='n'>{s.number}</td><td>{_e(s.name)}</td><td>{mark}</td>"
                f"<td class='n'>{s.passed:,}</td><td class='n'>{s.failed:,}</td>"
                f"<td class='n'>{s.skipped:,}</td></tr>"
            )
        self.w("</table>")

    def notes(self) -> None:
        notes = list(self.r.notes)
        obs = self.obs
        if obs.uncharted_entries:
            notes.append(
                f"{obs.uncharted_entries} entries of sensors beyond the first {MAX_SENSORS} "
                "are not shown on this page"
            )
        if obs.no_values:
            notes.append("the verifier did not pass the readings' values: nothing is charted")
        if not notes:
            return
        self.w("<h2>Notes</h2><ul>")
        for n in notes:
            self.w(f"<li>{_e(n, 2000)}</li>")
        self.w("</ul>")

    # --- sensors

    def sensors(self) -> None:
        obs, r = self.obs, self.r
        self.w("<h2>Sensors</h2>")
        if not obs.sensors:
            self.w("<p>No readings or gaps.</p>")
            return
        why = unproven_reason(r, allow_untrusted_keys=True)
        if why is not None:
            self.w(
                "<p class='caveat'>This bundle did <b>not</b> verify in a way that leaves the "
                f"readings proven ({_e(why, 2000)}): the charts show what the bundle holds, "
                "not what is proven.</p>"
            )
        elif r.failure_count:
            self.w(
                "<p class='caveat'>The charts show the readings of entries that passed "
                "the record, signature and inclusion checks; entries named in the failures "
                "are marked with a red dashed line.</p>"
            )
        self.w(
            "<p class='legend'>",
            "<span><i class='sw' style='background:var(--line);height:3px'></i>"
            "value: the mean of each time step, and a band from its smallest to its "
            "largest</span>",
            "<span><i class='sw' style='background:var(--suspect);border-radius:50%;"
            "width:10px'></i>QC 3 suspect</span>",
            "<span><i class='sw' style='background:var(--fail);width:10px'></i>QC 4 fail</span>",
            "<span><i class='sw' style='background:#80868b;width:3px'></i>"
            "QC 9 missing (no value)</span>",
            "<span><i class='sw' style='background:var(--gap)'></i>gap (reason on hover "
            "and listed)</span>",
            "<span><i class='sw' style='border-top:2px dashed var(--fail);height:0'></i>"
            "entry that failed verification</span></p>",
        )
        marks = self._failure_marks()
        for i, name in enumerate(sorted(obs.sensors)):
            self.sensor(i, obs.sensors[name], marks.get(name, []))

    def _failure_marks(self) -> dict[str, list[tuple[int, str]]]:
        marks: dict[str, list[tuple[int, str]]] = {}
        for f in self.r.failures:
            if f.sensor is None or f.entry is None:
                continue
            t = _micros_of(f.time)
            if t is None:
                continue
            got = marks.setdefault(f.sensor, [])
            if len(got) < MAX_FAILURE_MARKS:
                got.append((t, f.described()))
        return marks

    def sensor(self, i: int, st: _Sensor, marks: list[tuple[int, str]]) -> None:
        named = len(
            {f.entry for f in self.r.failures if f.sensor == st.name and f.entry is not None}
        )
        self.w(f"<section class='sensor' id='sensor-{i}'><h3>Sensor {_b(st.name)}</h3><table>")
        flags = " · ".join(
            f"{_FLAG_NAMES[k]}: {st.flags.get(k, 0):,}" for k in _FLAG_KEYS if st.flags.get(k)
        )
        rows = [
            ("First reading", _e(st.first or "—")),
            ("Last reading", _e(st.last or "—")),
            ("Readings", f"{st.readings:,}"),
            ("Gaps", f"{st.gaps:,}"),
            ("QC flags (values)", flags or "—"),
        ]
        if st.unverified:
            rows.append(("Entries failing record/signature/inclusion", f"{st.unverified:,}"))
        if named:
            rows.append(("Entries named in failures", f"{named:,}"))
        for k, v in rows:
            self.w(f"<tr><th>{k}</th><td>{v}</td></tr>")
        self.w("</table>")
        if st.tmin is not None and st.tmax is not None:
            lo, hi = st.tmin, st.tmax
            if hi - lo < 60_000_000:  # at least a minute wide, centred
                mid = (lo + hi) // 2
                lo, hi = mid - 30_000_000, mid + 30_000_000
            for series in st.series.values():
                self.chart(st, series, lo, hi, marks)
        if st.uncharted_values:
            self.w(
                f"<p class='note'>{st.uncharted_values:,} values of further quantities "
                f"(beyond {MAX_SERIES_PER_SENSOR}) are not charted.</p>"
            )
        self.gap_list(st)
        self.w("</section>")

    def chart(
        self, st: _Sensor, s: _Series, lo: int, hi: int, marks: list[tuple[int, str]]
    ) -> None:
        cols = s.values.columns(CHART_COLUMNS) if s.values is not None else []
        n = sum(c[0] for _, _, c in cols)
        missing = s.missing.count if s.missing is not None else 0
        if cols:
            vmin = min(c[2] for _, _, c in cols)
            vmax = max(c[4] for _, _, c in cols)
            yr = f"{_num(vmin)} – {_num(vmax)} {_b(s.unit)}"
        else:
            vmin = vmax = 0.0
            yr = "no values"
        extra = f", {missing:,} missing" if missing else ""
        self.w(
            f"<div class='chart'><h4>{_b(s.quantity)} ({_b(s.unit)})</h4>",
            f"<div class='range'><span>{yr}</span><span>{n:,} values{extra}</span></div>",
            f"<svg viewBox='0 0 {_W:.0f} {_H:.0f}' role='img' "
            f"aria-label='{_e(s.quantity)} of sensor {_e(st.name)} over time'>",
            f"<line class='axis' x1='{_X0}' y1='{_Y1}' x2='{_X1}' y2='{_Y1}'/>",
        )

        def x(t: int) -> float:
            return min(max(_X0 + (t - lo) / (hi - lo) * (_X1 - _X0), _X0), _X1)

        def y(v: float) -> float:
            return _Y1 - _scale(v, vmin, vmax) * (_Y1 - _Y0)

        for span in st.spans.spans:
            if span.end < lo or span.start > hi:
                continue
            x1, x2 = x(max(span.start, lo)), x(min(span.end, hi))
            self.w(
                f"<rect class='gap' x='{x1:.1f}' y='{_Y0 - 6:.1f}' "
                f"width='{max(x2 - x1, 1.5):.1f}' height='{_Y1 - _Y0 + 6:.1f}'>",
                f"<title>{_e(_span_text(span), 2000)}</title></rect>",
            )
        band, line = _trace(cols, x, y, st.spans)
        self.w(f"<path class='band' d='{band}'/><path class='val' d='{line}'/>")
        if s.missing is not None:
            for _, _, c in s.missing.columns(CHART_COLUMNS):
                self.w(
                    f"<rect class='missing' x='{x(c[1]) - 0.75:.1f}' y='{_Y1 - 7:.1f}' "
                    f"width='1.5' height='7'><title>{_mark_text(c, 'missing (QC 9)', None)}"
                    "</title></rect>"
                )
        if s.suspect is not None:
            for _, _, c in s.suspect.columns(CHART_COLUMNS):
                for t, v in _extremes(c):
                    self.w(
                        f"<circle class='suspect' cx='{x(t):.1f}' cy='{y(v):.1f}' r='3.2'>",
                        f"<title>{_mark_text(c, 'suspect (QC 3)', s.unit)}</title></circle>",
                    )
        if s.fail is not None:
            for _, _, c in s.fail.columns(CHART_COLUMNS):
                for t, v in _extremes(c):
                    cx, cy = x(t), y(v)
                    self.w(
                        f"<path class='fail' d='M{cx:.1f} {cy - 4:.1f}l4 4-4 4-4-4z'>",
                        f"<title>{_mark_text(c, 'fail (QC 4)', s.unit)}</title></path>",
                    )
        for t, text in marks:
            if lo <= t <= hi:
                xt = x(t)
                self.w(
                    f"<line class='failed' x1='{xt:.1f}' y1='{_Y0 - 6:.1f}' x2='{xt:.1f}' "
                    f"y2='{_Y1:.1f}'><title>{_e(text, 2000)}</title></line>"
                )
        self.w(
            "</svg>",
            f"<div class='range'><span>{_when(lo)}</span><span>{_when(hi)}</span></div></div>",
        )

    def gap_list(self, st: _Sensor) -> None:
        if not st.gaps:
            return
        opened = " open" if st.gaps <= 10 else ""
        self.w(
            f"<details{opened}><summary>Gaps of sensor {_b(st.name)}: {st.gaps:,}</summary>",
            "<table><tr><th>start</th><th>end</th><th>reason</th></tr>",
        )
        for start, end, reason in st.listed_gaps:
            self.w(f"<tr><td>{_e(start)}</td><td>{_e(end)}</td><td>{_b(reason)}</td></tr>")
        self.w("</table>")
        if st.gaps > len(st.listed_gaps):
            self.w(
                f"<p class='note'>The first {len(st.listed_gaps)} are listed; all "
                f"{st.gaps:,} are shaded in the charts.</p>"
            )
        self.w("</details>")

    # --- anchoring

    def anchoring(self) -> None:
        r = self.r
        self.w("<h2>Anchoring</h2>")
        recorded = list(getattr(r, "recorded_by", ()))
        anchors = list(r.anchors)
        end: int = max([*r.checkpoints, (r.last_index or 0) + 1, 1])
        if r.checkpoints or anchors:
            self.w(
                "<div class='chart'><svg viewBox='0 0 600 44' role='img' "
                "aria-label='checkpoints and anchors over the log'>",
                "<line class='axis' x1='4' y1='30' x2='596' y2='30'/>",
            )

            def xi(i: int) -> float:
                return 4 + min(max(i, 0), end) / end * 592

            for rb in recorded:
                x1, x2 = xi(rb.first), xi(rb.last + 1)
                self.w(
                    f"<rect class='rec' x='{x1:.1f}' y='24' width='{max(x2 - x1, 1.5):.1f}' "
                    f"height='12'><title>entries {rb.first}–{rb.last} recorded no later than "
                    f"{_e(rb.time)} ({_e(rb.backend)})</title></rect>"
                )
            for size in r.checkpoints:
                xc = xi(size)
                self.w(
                    f"<line class='cp' x1='{xc:.1f}' y1='20' x2='{xc:.1f}' y2='40'>"
                    f"<title>checkpoint {size}</title></line>"
                )
            for k, a in enumerate(anchors):
                css = _anchor_class(a.status)
                self.w(
                    f"<circle class='{css}' cx='{xi(a.checkpoint):.1f}' cy='{12 - (k % 2) * 4}' "
                    f"r='4'><title>{_e(a.backend)} anchor of checkpoint {a.checkpoint}: "
                    f"{_e(a.status)}</title></circle>"
                )
            self.w(
                "</svg><div class='range'><span>entry 0</span>"
                f"<span>entry {end - 1}</span></div></div>"
            )
        if recorded:
            self.w("<ul>")
            for rb in recorded:
                self.w(
                    f"<li>Entries {rb.first}–{rb.last} were recorded no later than "
                    f"{_e(rb.time)} ({_b(rb.backend)}).</li>"
                )
            self.w("</ul>")
        else:
            self.w(
                "<p>No anchor was verified against an independent ledger: when the entries "
                "were recorded rests on the device's own clock.</p>"
            )
        if anchors:
            self.w(
                "<table><tr><th>checkpoint</th><th>backend</th><th>state</th>"
                "<th>status</th><th>time</th></tr>"
            )
            for a in anchors:
                self.w(
                    f"<tr><td class='n'>{a.checkpoint}</td><td>{_b(a.backend)}</td>"
                    f"<td>{_e(a.state)}</td><td>{_e(a.status, 2000)}</td>"
                    f"<td>{_e(a.time or '—')}</td></tr>"
                )
            self.w("</table>")
        else:
            self.w("<p>The bundle holds no anchor receipt.</p>")


def _anchor_class(status: str) -> str:
    if status.startswith("failed"):
        return "a-failed"
    if status == "verified":
        return "a-verified"
    if status.startswith("local"):
        return "a-local"
    return "a-unchecked"


def _scale(v: float, lo: float, hi: float) -> float:
    """Where ``v`` lies between ``lo`` and ``hi``, 0 to 1 (0.5 when they are equal)."""
    span = hi - lo
    if span == 0:
        return 0.5
    if not math.isfinite(span):  # beyond the largest double: halve everything first
        return (v / 2 - lo / 2) / (hi / 2 - lo / 2)
    return (v - lo) / span


def _extremes(c: Sequence[Any]) -> Iterable[tuple[int, float]]:
    """The smallest and the largest value of a bucket (one point if they coincide)."""
    yield c[1], c[2]
    if (c[3], c[4]) != (c[1], c[2]):
        yield c[3], c[4]


def _mark_text(c: Sequence[Any], what: str, unit: str | None) -> str:
    """The tooltip of a marked bucket: ``unit`` None for values that have none."""
    n, t1, v1, t2, v2 = c[:5]
    u = f" {unit}" if unit else ""
    if n == 1:
        value = "" if unit is None else f": {_num(v1)}{u}"
        return _e(f"{what}{value} at {_when(t1)}")
    first, last = sorted((t1, t2))
    values = "" if unit is None else f", {_num(v1)} to {_num(v2)}{u}"
    return _e(f"{n} values {what} around {_when(first)} – {_when(last)}{values}")


def _span_text(span: _Span) -> str:
    reasons = ", ".join(
        ("other" if r == _OTHER else r) + (f" ×{n}" if n > 1 else "")
        for r, n in span.reasons.items()
    )
    head = "gap" if span.count == 1 else f"{span.count} gaps"
    return f"{head} {_when(span.start)} – {_when(span.end)}: {reasons}"


def _mean(c: Sequence[Any]) -> float:
    mean = c[5] / c[0]
    return float(mean) if math.isfinite(mean) else c[2] / 2 + c[4] / 2


def _trace(
    cols: list[tuple[int, int, list[Any]]], x: Any, y: Any, spans: GapSpans
) -> tuple[str, str]:
    """SVG path data of a series: a band over each column from its smallest to its
    largest value, and a line through the columns' means. Both break where a gap lies
    between two columns or the time between them is far longer than usual (ten times
    the median step, and three columns). A lone column's mean is a dot (a round cap on
    a zero-length line)."""
    if not cols:
        return "", ""
    centres = [(a + b) // 2 for a, b, _ in cols]
    steps = sorted(b - a for a, b in itertools.pairwise(centres))
    far = max(10 * (steps[len(steps) // 2] if steps else 0), 3 * (cols[0][1] - cols[0][0]))
    runs: list[list[tuple[int, int, list[Any]]]] = [[cols[0]]]
    for prev, col, t in zip(centres, cols[1:], centres[1:], strict=False):
        if t - prev > far or spans.between(prev, t):
            runs.append([])
        runs[-1].append(col)
    band: list[str] = []
    line: list[str] = []
    for run in runs:
        means = [f"{x((a + b) // 2):.1f} {y(_mean(c)):.1f}" for a, b, c in run]
        line.append("M" + "L".join(means) + ("l0 0" if len(means) == 1 else ""))
        if all(c[2] == c[4] for _, _, c in run):
            continue
        top: list[str] = []
        bottom: list[str] = []
        for a, b, c in run:
            xa, xb = x(a), x(b)
            if xb - xa < 1:  # at least a pixel wide
                mid = (xa + xb) / 2
                xa, xb = mid - 0.5, mid + 0.5
            top.append(f"{xa:.1f} {y(c[4]):.1f}L{xb:.1f} {y(c[4]):.1f}")
            bottom.append(f"{xb:.1f} {y(c[2]):.1f}L{xa:.1f} {y(c[2]):.1f}")
        band.append("M" + "L".join(top) + "L" + "L".join(reversed(bottom)) + "Z")
    return "".join(band), "".join(line)
