"""ledger-verify's reports for a person: the verified readings as CSV, the HTML page.

Bundles are built for real (signed records, Merkle proofs, checkpoints: lc_bundles and
v2_bundles) with three sensors, QARTOD flags, a missing value and gap records, then
verified with ``verify_source`` and the reports as its observer. The CSV is read back
with the csv module and compared with the records decoded from the bundle's entries;
the HTML page is rendered by headless Chromium (a screenshot decoded here, and the DOM
after rendering).
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import io
import itertools
import json
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterable
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from ledger_client.bundle import Bundle
from ledger_client.report_csv import COLUMNS, CsvRefused, CsvReport
from ledger_client.report_html import (
    CHART_COLUMNS,
    MAX_BUCKETS,
    MAX_GAP_SPANS,
    Buckets,
    GapSpans,
    HtmlReport,
)
from ledger_client.verify import Report, verify_bundle
from ledger_client.verify_stream import verify_source
from tests.ledger_client.lc_bundles import NOW, ORIGIN, BundleMaker
from tests.ledger_client.v2_bundles import manifest_for, notes_for, v2_members, write_container

WML = "http://www.opengis.net/def/waterml/2.0/quality/"
QUALITY = {
    1: WML + "good",
    2: WML + "unchecked",
    3: WML + "suspect",
    4: WML + "poor",
    9: "http://www.opengis.net/def/nil/OGC/0/missing",
    None: WML + "unchecked",
}
"""docs/verify-reports.md's table, written out independently of report_csv."""

SETUP_HINT = "run scripts/setup --dev (it installs Debian's chromium)"


# --- bundles -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Names:
    ph: str = "ph-1"
    temp: str = "temp-1"
    do: str = "do-1"
    ph_quantity: str = "pH"
    ph_unit: str = "pH"
    reason: str = "timeout"


HOSTILE = Names(
    ph="<script>alert(1)</script>",
    temp='ph,2 "quoted"\nline',
    do="do-1\u202e",  # a right-to-left override in an id
    ph_quantity="</title><svg onload=alert(3)>",
    ph_unit='"><img src=x onerror=alert(2)>',
    reason="</title><script>alert(4)</script>",
)


def station(m: BundleMaker, rounds: int = 60, names: Names = Names()) -> list[dict[str, Any]]:
    """A boot event, then per round a pH reading (QC 3 in round 7, QC 4 in round 13, a
    missing value flagged 9 in round 20), a temperature reading with a conductivity
    value (QC not evaluated, an integer), and a dissolved-oxygen reading without QC
    except in rounds 15, 16 and 40, where a gap record says why it is silent."""
    recs = [m.event("boot", {"software": "riverseal tests"})]
    for i in range(rounds):
        r = m.reading(names.ph, 7.0 + (i % 9) / 10)
        flag = 3 if i == 7 else 4 if i == 13 else 1
        value: dict[str, Any] = {
            "q": names.ph_quantity,
            "u": names.ph_unit,
            "v": r["values"][0]["v"],
            "qc": {"flag": flag, "tests": f"{flag}111"},
        }
        if i == 20:
            value = {**value, "v": None, "qc": {"flag": 9, "tests": "9999"}}
        r["values"] = [value]
        recs.append(r)
        t = m.reading(names.temp, 11 + i / 10)
        t["values"] = [
            {"q": "T", "u": "Cel", "v": t["values"][0]["v"], "qc": {"flag": 1, "tests": "1111"}},
            {"q": "EC", "u": "uS/cm", "v": 400 + i, "qc": {"flag": 2, "tests": "2222"}},
        ]
        recs.append(t)
        if i in (15, 16, 40):
            recs.append(m.gap(names.do, names.reason if i != 40 else "crc"))
        else:
            recs.append(m.reading(names.do))
    return recs


def v1_bundle(names: Names = Names(), *, device: str | None = None) -> tuple[BundleMaker, Bundle]:
    m = BundleMaker() if device is None else BundleMaker(device=device)
    return m, m.build(station(m, names=names))


@pytest.fixture(scope="module")
def good() -> tuple[BundleMaker, Bundle]:
    return v1_bundle()


def write_v1(tmp_path: Path, doc: Bundle | dict[str, Any], name: str = "bundle.json") -> Path:
    path = tmp_path / name
    text = doc.dumps() if isinstance(doc, Bundle) else json.dumps(doc, ensure_ascii=False)
    path.write_text(text, encoding="utf-8")
    return path


class Tee:
    """One observer feeding several (the CLI passes one of each)."""

    def __init__(self, *observers: Any) -> None:
        self.observers = observers

    def entry(self, index: int, rec: tuple[Any, ...] | None, ok: bool) -> None:
        for o in self.observers:
            o.entry(index, rec, ok)


def verify(source: Path, trusted: Any, *observers: Any, jobs: int = 1) -> Report:
    return verify_source(source, trusted, now=NOW, jobs=jobs, observer=Tee(*observers))


def trust(m: BundleMaker) -> list[Any]:
    return [m.signer.verifier()]


# --- what the CSV must hold, decoded from the entries themselves ------------------------------


def entries_of(bundle: Bundle) -> list[tuple[int, bytes]]:
    return [(e.index, e.entry) for e in bundle.entries]


def expected_rows(entries: Iterable[tuple[int, bytes]], skip: set[int]) -> list[list[Any]]:
    """Per value of each reading not in ``skip``: the CSV row, with the value as a
    number (None when missing) and the entry's bytes, to check its text against."""
    rows = []
    for index, raw in entries:
        rec = json.loads(raw)["rec"]
        if rec["kind"] != "reading" or index in skip:
            continue
        for v in rec["values"]:
            flag = 9 if v["v"] is None else v.get("qc", {}).get("flag")
            rows.append(
                [
                    str(index),
                    rec["sensor"],
                    rec["time"],
                    v["q"],
                    v["u"],
                    v["v"],
                    "" if flag is None else str(flag),
                    QUALITY[flag],
                    "synced" if rec["clock"] == "synced" else "not-synced",
                    raw,
                ]
            )
    return rows


def read_csv(path: Path) -> list[list[str]]:
    data = path.read_bytes()
    text = data.decode("utf-8")  # strict: the file is UTF-8
    assert text.startswith(",".join(COLUMNS) + "\r\n")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == list(COLUMNS)
    # every record ends in CRLF; a bare LF only inside a quoted field
    inside = sum(field.count("\n") for row in rows for field in row)
    assert text.endswith("\r\n") and text.replace("\r\n", "").count("\n") == inside
    return rows[1:]


def assert_rows(got: list[list[str]], want: list[list[Any]]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        raw: bytes = w[9]
        assert g[:5] == w[:5]
        assert g[6:] == w[6:9]
        if w[5] is None:
            assert g[5] == ""
        else:
            # the number as the signed record writes it, and the same number
            assert f'"v":{g[5]}'.encode() in raw, (g, raw)
            assert float(g[5]) == w[5]


def named(report: Report) -> set[int]:
    return {f.entry for f in report.failures if f.entry is not None}


# --- CSV ------------------------------------------------------------------------------------


def test_csv_rows_are_exactly_the_verified_readings(
    good: tuple[BundleMaker, Bundle], tmp_path: Path
) -> None:
    m, bundle = good
    out = tmp_path / "verified.csv"
    report = verify(write_v1(tmp_path, bundle), trust(m), c := CsvReport(out))
    assert report.failure_count == 0
    rows = c.finish(report)
    got = read_csv(out)
    want = expected_rows(entries_of(bundle), set())
    assert rows == len(got) == 60 + 2 * 60 + 57
    assert_rows(got, want)
    by_flag = {r[6]: r[7] for r in got}
    assert by_flag == {
        "1": QUALITY[1],
        "2": QUALITY[2],
        "3": QUALITY[3],
        "4": QUALITY[4],
        "9": QUALITY[9],
        "": QUALITY[None],
    }
    missing = [r for r in got if r[6] == "9"]
    assert len(missing) == 1
    assert missing[0][5] == ""
    assert any(r[3] == "EC" and r[5] == "400" for r in got)  # an integer stays one
    assert not (tmp_path / "verified.csv.tmp").exists()


def test_csv_of_a_v2_bundle_checked_by_worker_processes(tmp_path: Path) -> None:
    m = BundleMaker()
    recs = station(m, rounds=100)
    entries = [m.sign(r, i) for i, r in enumerate(recs)]
    notes = notes_for(m.signer, ORIGIN, entries, [256, len(entries)])
    manifest = manifest_for(m.signer, ORIGIN, m.device, notes)
    path = write_container(tmp_path / "b.rsb", v2_members(entries, manifest, len(entries)))
    out = tmp_path / "v2.csv"
    report = verify(path, trust(m), c := CsvReport(out), jobs=2)
    assert report.failure_count == 0
    c.finish(report)
    assert_rows(read_csv(out), expected_rows(enumerate(entries), set()))


def test_a_changed_value_leaves_its_entry_out(
    good: tuple[BundleMaker, Bundle], tmp_path: Path
) -> None:
    m, bundle = good
    doc = bundle.to_json()
    k = 22  # round 7's pH reading, QC 3
    text = doc["entries"][k]["entry"]
    rec = json.loads(text)["rec"]
    assert rec["sensor"] == "ph-1"
    old = rec["values"][0]["v"]
    doc["entries"][k]["entry"] = text.replace(f'"v":{old}', '"v":9.99')
    out = tmp_path / "verified.csv"
    report = verify(write_v1(tmp_path, doc), trust(m), c := CsvReport(out))
    assert named(report) == {k}
    c.finish(report)
    got = read_csv(out)
    assert k not in {int(r[0]) for r in got}
    assert_rows(got, expected_rows(entries_of(bundle), {k}))


def test_an_entry_named_only_after_the_stream_is_dropped_at_finish(
    good: tuple[BundleMaker, Bundle], tmp_path: Path
) -> None:
    """A deleted temperature reading: completeness names the hole and the sensor's next
    reading (its seq jumps), which passed steps 2–4 and was already written."""
    m, bundle = good
    doc = bundle.to_json()
    gone = 5
    assert json.loads(doc["entries"][gone]["entry"])["rec"]["sensor"] == "temp-1"
    del doc["entries"][gone]
    out = tmp_path / "verified.csv"
    report = verify(write_v1(tmp_path, doc), trust(m), c := CsvReport(out))
    skip = named(report)
    assert {gone, gone + 3} <= skip  # the hole, and temp-1's next reading
    assert all(f.check == "completeness" for f in report.failures)
    rows = c.finish(report)
    got = read_csv(out)
    assert rows == len(got)
    remaining = [(i, e) for i, e in entries_of(bundle) if i != gone]
    assert_rows(got, expected_rows(remaining, skip))


@pytest.fixture
def root_flipped(good: tuple[BundleMaker, Bundle], tmp_path: Path) -> Path:
    """The good bundle with one bit of checkpoint 120's root flipped."""
    _, bundle = good
    doc = bundle.to_json()
    origin, size, root, rest = doc["checkpoints"][1].split("\n", 3)
    flipped = bytearray(base64.b64decode(root))
    flipped[0] ^= 0x80
    doc["checkpoints"][1] = "\n".join([origin, size, base64.b64encode(flipped).decode(), rest])
    return write_v1(tmp_path, doc, "flipped.json")


def test_a_failure_naming_no_entry_refuses_every_row(
    good: tuple[BundleMaker, Bundle], root_flipped: Path, tmp_path: Path
) -> None:
    m, _ = good
    out = tmp_path / "verified.csv"
    out.write_text("an earlier run's rows\r\n")
    report = verify(root_flipped, trust(m), c := CsvReport(out))
    assert any(f.entry is None and f.check == "checkpoint" for f in report.failures)
    with pytest.raises(CsvRefused, match="names no entry"):
        c.finish(report)
    assert not out.exists()  # not even an earlier file under the name
    assert not (tmp_path / "verified.csv.tmp").exists()


def test_failures_counted_but_not_listed_refuse_every_row(
    good: tuple[BundleMaker, Bundle], tmp_path: Path
) -> None:
    m, bundle = good
    doc = bundle.to_json()
    doc["entries"][30]["entry"] = doc["entries"][30]["entry"].replace('"v":', '"v":1', 1)
    report = verify(write_v1(tmp_path, doc), trust(m), c := CsvReport(tmp_path / "v.csv"))
    assert 30 in named(report)  # record version 11 (and its sensor's seq then jumps)
    truncated = dataclasses.replace(report, failure_count=report.failure_count + 1)
    with pytest.raises(CsvRefused, match="not all known"):
        c.finish(truncated)
    assert not (tmp_path / "v.csv").exists()


def test_keys_from_the_bundle_itself_refuse_unless_allowed(
    good: tuple[BundleMaker, Bundle], tmp_path: Path
) -> None:
    _, bundle = good
    path = write_v1(tmp_path, bundle)
    report = verify(path, None, c := CsvReport(tmp_path / "a.csv"))
    assert report.failure_count == 0 and not report.keys_trusted
    with pytest.raises(CsvRefused, match="keys came from the bundle"):
        c.finish(report)
    assert not (tmp_path / "a.csv").exists()
    report = verify(path, None, c := CsvReport(tmp_path / "b.csv", allow_untrusted_keys=True))
    assert c.finish(report) == 237


def test_without_values_the_csv_is_refused(
    good: tuple[BundleMaker, Bundle], tmp_path: Path
) -> None:
    m, bundle = good
    report = verify(write_v1(tmp_path, bundle), trust(m))
    c = CsvReport(tmp_path / "v.csv")
    rec = (1, "reading", "ph-1", 0, 100, None, "2026-03-01T00:00:20.000000Z", "x", True, "1", None)
    c.entry(1, rec, True)
    with pytest.raises(CsvRefused, match="values"):
        c.finish(report)


def test_abort_and_an_unfinished_with_block_leave_nothing(tmp_path: Path) -> None:
    with CsvReport(tmp_path / "v.csv") as c:
        assert c.tmp.exists()
    assert list(tmp_path.iterdir()) == []


def test_csv_quotes_ids_with_commas_quotes_newlines_and_markup(tmp_path: Path) -> None:
    m, bundle = v1_bundle(HOSTILE)
    out = tmp_path / "verified.csv"
    report = verify(write_v1(tmp_path, bundle), trust(m), c := CsvReport(out))
    assert report.failure_count == 0
    c.finish(report)
    raw = out.read_bytes()
    assert b'"ph,2 ""quoted""\nline"' in raw  # RFC 4180: quoted, quotes doubled
    got = read_csv(out)
    assert_rows(got, expected_rows(entries_of(bundle), set()))
    assert {r[1] for r in got} == {HOSTILE.ph, HOSTILE.temp, HOSTILE.do}


def test_a_lone_surrogate_is_written_as_its_escape(tmp_path: Path) -> None:
    c = CsvReport(tmp_path / "v.csv")
    values = (("pH", "p\ud800H", 7.5, 1),)
    c.entry(0, (0, "reading", "s", 0, None, None, "t", "t", False, "1", values), True)
    report = dataclasses.replace(
        verify_report_stub(), failures=(), failure_count=0, keys_trusted=True
    )
    assert c.finish(report) == 1
    assert read_csv(tmp_path / "v.csv") == [
        ["0", "s", "t", "pH", "p\\ud800H", "7.5", "1", QUALITY[1], "not-synced"]
    ]


def verify_report_stub() -> Report:
    """A real Report of a real (tiny) bundle, for tests that feed records by hand."""
    m = BundleMaker()
    bundle = m.build([m.event("boot"), m.reading("ph-1")])
    return verify_bundle(bundle, trust(m), now=NOW)


# --- HTML: the pieces that keep memory bounded ---------------------------------------------


def test_buckets_stay_bounded_and_keep_every_extreme() -> None:
    b = Buckets(origin=0)
    values = [((i * 7919) % 1000) / 10 for i in range(60_000)]
    t = 0
    for i, v in enumerate(values):
        t += 1_000_000 + (i % 13) * 10_000  # about a reading a second, irregular
        b.add(t, v)
        assert len(b.cells) <= MAX_BUCKETS
    cells = b.points()
    assert len(cells) > MAX_BUCKETS // 4  # the width adapted, not collapsed
    assert sum(c[0] for c in cells) == len(values)
    assert min(c[2] for c in cells) == min(values)
    assert max(c[4] for c in cells) == max(values)
    assert [c[1] for c in cells] == sorted(c[1] for c in cells)


def test_buckets_take_times_before_the_first() -> None:
    b = Buckets(origin=10**15, limit=8)
    for t in (10**15, 10**15 - 5, 10**15 + 1000, 10**15 - 10**6):
        b.add(t, float(t % 7))
    assert sum(c[0] for c in b.points()) == 4
    assert len(b.cells) <= 8


def test_gap_spans_merge_overlaps_and_stay_bounded() -> None:
    g = GapSpans()
    g.add(100, 200, "timeout")
    g.add(150, 300, "crc")  # overlaps: one span, two gaps, two reasons
    g.add(50, 60, "silent")  # before: kept apart, in order
    assert [(s.start, s.end, s.count) for s in g.spans] == [(50, 60, 1), (100, 300, 2)]
    assert g.spans[1].reasons == {"timeout": 1, "crc": 1}
    assert g.between(60, 150) and g.between(250, 260)  # a span between, or around
    assert not g.between(60, 100) and not g.between(300, 400)  # touching is not between
    for i in range(5_000):
        g.add(10_000 + i * 100, 10_000 + i * 100 + (50 if i % 3 else 5), "silent")
        assert len(g.spans) <= 2 * MAX_GAP_SPANS
    assert sum(s.count for s in g.spans) == 5_003
    ends = [(s.start, s.end) for s in g.spans]
    assert ends == sorted(ends)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(ends))
    covered = [(s.start, s.end) for s in g.spans]
    for i in range(0, 5_000, 97):  # every gap lies inside a shaded span
        start = 10_000 + i * 100
        assert any(a <= start and start + 5 <= b for a, b in covered)


def test_a_long_stream_keeps_memory_bounded(tmp_path: Path) -> None:
    """200,000 readings (every 97th suspect, every 1009th failed) and 2,000 gaps of one
    sensor, fed as the checklist feeds them: the page keeps at most MAX_BUCKETS buckets
    a series and still marks flagged values."""
    h = HtmlReport(tmp_path / "big.html")
    day0 = 20_000 * 86_400

    def key(s: int) -> str:
        return datetime.fromtimestamp(day0 + s, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    for i in range(200_000):
        flag = 3 if i % 97 == 0 else 4 if i % 1009 == 0 else 1
        vals = (("pH", "pH", 7 + (i % 50) / 100, flag),)
        k = key(i * 10)
        h.entry(i, (i, "reading", "ph-1", i, None, None, k, k, True, str(flag), vals), True)
        if i % 100 == 50:
            gap = ("timeout", key(i * 10 + 1), key(i * 10 + 4))
            h.entry(i, (i, "gap", "ph-1", i, None, None, k, k, True, gap, None), True)
    st = h.sensors["ph-1"]
    series = st.series[("pH", "pH")]
    assert series.values is not None and series.suspect is not None and series.fail is not None
    assert len(series.values.cells) <= MAX_BUCKETS
    assert 0 < len(series.suspect.cells) <= MAX_BUCKETS
    assert series.fail.count == sum(1 for i in range(200_000) if i % 97 and i % 1009 == 0)
    assert len(st.spans.spans) <= 2 * MAX_GAP_SPANS
    assert st.readings == 200_000 and st.gaps == 2_000
    h.finish(verify_report_stub(), "synthetic")
    page = (tmp_path / "big.html").read_text(encoding="utf-8")
    assert len(page) < 2_000_000
    assert 0 < page.count("class='suspect'") <= 2 * CHART_COLUMNS
    cols = series.values.columns(CHART_COLUMNS)
    assert CHART_COLUMNS // 4 < len(cols) <= CHART_COLUMNS
    assert sum(c[0] for _, _, c in cols) == 200_000
    assert min(c[2] for _, _, c in cols) == 7.0 and max(c[4] for _, _, c in cols) == 7.49


# --- HTML in Chromium ---------------------------------------------------------------------


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail(f"chromium is not installed: {SETUP_HINT}", pytrace=False)
    profile = tmp_path / "chromium-profile"
    return subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )


def dump_dom(tmp_path: Path, page: Path) -> str:
    return chromium(tmp_path, "--dump-dom", page.as_uri()).stdout.decode("utf-8")


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the RGB of every pixel of an 8-bit, non-interlaced RGB(A) PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, [], b""
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat.append(body)
    width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, interlace) == (8, 0) and ctype in (2, 6)
    bpp = 3 if ctype == 2 else 4
    stride = width * bpp
    raw = zlib.decompress(b"".join(idat))
    low7 = int.from_bytes(b"\x7f" * stride, "big")
    high = int.from_bytes(b"\x80" * stride, "big")
    prev = bytes(stride)
    pixels: list[bytes] = []
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]
        if kind == 0:
            cur = line
        elif kind == 2:  # Up: bytewise sums of two rows at once (no carry between bytes)
            a, b = int.from_bytes(line, "big"), int.from_bytes(prev, "big")
            cur = (((a & low7) + (b & low7)) ^ ((a ^ b) & high)).to_bytes(stride, "big")
        else:
            out = bytearray(line)
            for i in range(stride):
                left = out[i - bpp] if i >= bpp else 0
                if kind == 1:
                    out[i] = (out[i] + left) & 255
                elif kind == 3:
                    out[i] = (out[i] + ((left + prev[i]) >> 1)) & 255
                else:  # Paeth
                    up, corner = prev[i], (prev[i - bpp] if i >= bpp else 0)
                    p = left + up - corner
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                    out[i] = (
                        out[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)
                    ) & 255
            cur = bytes(out)
        pixels.extend(cur[i : i + 3] for i in range(0, stride, bpp))
        prev = cur
    return width, height, pixels


class Tags(HTMLParser):
    """Every element and attribute name of a document, and its text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[str] = []
        self.data: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(name for name, _ in attrs)

    def handle_data(self, data: str) -> None:
        self.data.append(data)

    @property
    def text(self) -> str:
        return "".join(self.data)


def html_report(
    tmp_path: Path, source: Path, trusted: Any, name: str = "report.html"
) -> tuple[Report, Path]:
    out = tmp_path / name
    report = verify(source, trusted, h := HtmlReport(out))
    h.finish(report, source.name)
    return report, out


def test_the_page_renders_with_charts_and_fetches_nothing(
    good: tuple[BundleMaker, Bundle], tmp_path: Path
) -> None:
    m, bundle = good
    report, page = html_report(tmp_path, write_v1(tmp_path, bundle), trust(m))
    assert report.failure_count == 0
    source = page.read_text(encoding="utf-8")
    for outside in ("<script", "<link", "<img", "src=", "href=", "url(", "@import", "//"):
        assert outside not in source.replace("http-equiv", ""), outside
    shot = tmp_path / "shot.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1000,1400", page.as_uri())
    width, height, pixels = png_pixels(shot.read_bytes())
    assert (width, height) == (1000, 1400)
    colours = set(pixels)
    assert len(colours) > 50  # text, tables, the verdict, charts: not a blank page
    banner = {bytes((0x1B, 0x7A, 0x34)), bytes((0x9A, 0x67, 0x00))}  # ok or warn green/amber
    assert banner & colours
    assert bytes((0x1F, 0x5F, 0xBF)) in colours  # a chart's value line

    dom = dump_dom(tmp_path, page)
    tags = Tags(dom)
    assert tags.tags.count("svg") == 4 + 1  # pH, T, EC, DO, and the anchoring timeline
    assert "script" not in tags.tags
    assert 'class="val" d="M' in dom  # every series has its line
    assert dom.count('<circle class="suspect"') == 1
    assert dom.count('<path class="fail"') == 1
    assert dom.count('<rect class="missing"') == 1
    assert dom.count('<rect class="gap"') == 3  # do-1's gaps, shaded on its chart
    text = tags.text
    assert "gap 2026-03-01" in text and ": timeout" in text and ": crc" in text
    for sensor in ("ph-1", "temp-1", "do-1"):
        assert f"Sensor {sensor}" in text
    assert "3 suspect: 1" in text and "4 fail: 1" in text and "9 missing: 1" in text
    assert "First reading" in text and "Gaps of sensor do-1: 3" in text
    for step in ("keys", "record", "signature", "inclusion", "completeness"):
        assert step in text
    assert "local, not independent" in text  # the anchor's status


def test_the_page_of_a_tampered_bundle_lists_its_failures(
    good: tuple[BundleMaker, Bundle], tmp_path: Path
) -> None:
    m, bundle = good
    doc = bundle.to_json()
    k = 40  # a pH reading
    rec = json.loads(doc["entries"][k]["entry"])["rec"]
    assert rec["sensor"] == "ph-1"
    old = rec["values"][0]["v"]
    doc["entries"][k]["entry"] = doc["entries"][k]["entry"].replace(f'"v":{old}', '"v":3.5')
    report, page = html_report(tmp_path, write_v1(tmp_path, doc), trust(m))
    assert named(report) == {k}
    dom = dump_dom(tmp_path, page)
    text = Tags(dom).text
    assert "FAILED" in text
    described = [f.described() for f in report.failures]
    assert len(described) >= 2
    for d in described:
        assert d in text  # each failure, in full
        assert d.startswith(f"entry {k} (ph-1, {rec['time']}, pH 3.5 pH)")
    assert '<line class="failed"' in dom  # marked on the pH chart


def test_hostile_strings_are_shown_as_text(tmp_path: Path) -> None:
    device = "rs-<b>0a1b2c</b>"
    m, bundle = v1_bundle(HOSTILE, device=device)
    doc = bundle.to_json()
    k = 1
    doc["entries"][k]["entry"] = doc["entries"][k]["entry"].replace('"v":7', '"v":6', 1)
    report, page = html_report(tmp_path, write_v1(tmp_path, doc), trust(m))
    assert named(report) == {k}
    source = page.read_text(encoding="utf-8")
    for markup in ("<script", "<img", "<svg onload", "<b>"):
        assert markup not in source
    parsed = Tags(source)
    assert {"script", "img", "b"}.isdisjoint(parsed.tags)
    assert not [a for a in parsed.attrs if a.startswith("on")]
    dom = dump_dom(tmp_path, page)
    tags = Tags(dom)
    assert {"script", "img", "b"}.isdisjoint(tags.tags)
    assert not [a for a in tags.attrs if a.startswith("on")]
    text = tags.text
    for shown in (HOSTILE.ph, HOSTILE.ph_unit, HOSTILE.reason, device):
        assert shown in text, shown
    assert f"entry {k} ({HOSTILE.ph}," in text
