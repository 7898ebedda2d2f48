"""``ledger-verify``: check riverseal evidence offline and say what holds.

    ledger-verify SOURCE [--trust FILE] [--tsa-roots PEM] [--rpc URL]
                  [--since-checkpoint FILE] [--previous SOURCE] [--jobs N] [--json]

SOURCE is a bundle (version 1 JSON or version 2 container), a published tiles
directory or ``http(s)://`` prefix, or one reading's tlog-proof evidence.

Exit status, one per verdict level (docs/bundle-format.md §9.1): 0 VERIFIED;
1 FAILED (each failure names the entry or checkpoint, what it says, the check and
the reason); 2 the input could not be read, with a one-line diagnosis on stderr;
3 AUTHENTIC, NOT INDEPENDENTLY DATED; 4 UNTRUSTED KEY; 5 FORKED HISTORY.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from .anchors import AnchorChecker
from .bundle import MAX_BUNDLE_BYTES
from .checkpoint import Checkpoint
from .errors import LedgerClientError
from .evm import EvmChecker
from .lineage import KeptCheckpoint
from .note import split_note
from .report_csv import CsvRefused, CsvReport
from .report_html import HtmlReport
from .trust import MalformedTrust, TrustList, parse_trust
from .tsa import TsaChecker, load_tsa_roots
from .verify import Level, Report
from .verify_stream import newest_checkpoint, verify_source

__all__ = [
    "EXIT_FAILED",
    "EXIT_FORKED",
    "EXIT_OK",
    "EXIT_UNDATED",
    "EXIT_UNREADABLE",
    "EXIT_UNTRUSTED",
    "exit_status",
    "main",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNREADABLE = 2
EXIT_UNDATED = 3
EXIT_UNTRUSTED = 4
EXIT_FORKED = 5
_EXIT = {
    Level.VERIFIED: EXIT_OK,
    Level.FAILED: EXIT_FAILED,
    Level.AUTHENTIC_UNDATED: EXIT_UNDATED,
    Level.UNTRUSTED_KEY: EXIT_UNTRUSTED,
    Level.FORKED: EXIT_FORKED,
}
MAX_PRINTED_FAILURES = 50
MAX_KEPT_NOTE_BYTES = 65_536


def exit_status(level: Level) -> int:
    """The exit status of a verdict level."""
    return _EXIT[level]


_PROG = "ledger-verify"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=_PROG,
        description="Verify a riverseal bundle offline: record signatures, Merkle inclusion, "
        "signed checkpoints, consistency, anchors and completeness.",
        epilog="exit status, one per verdict: 0 VERIFIED (trusted keys, nothing wrong, "
        "independently dated by a checked anchor); 1 FAILED; 2 input unreadable; "
        "3 AUTHENTIC, NOT INDEPENDENTLY DATED (no anchor checked: give --tsa-roots or "
        "--rpc); 4 UNTRUSTED KEY (no --trust); 5 FORKED HISTORY (two signed checkpoints "
        "that cannot be one log)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "bundle",
        metavar="SOURCE",
        help="a bundle file (v1 JSON or v2), a published tiles directory or http(s):// "
        "prefix, or a reading's tlog-proof evidence file",
    )
    p.add_argument(
        "--trust",
        type=Path,
        metavar="FILE",
        help="trust file with the device keys you trust (lines: key <vkey> [from [until]]; "
        "witness <vkey> and witness-policy <k> to require witness cosignatures); "
        "without it the bundle's own keys are used and are NOT independently trusted",
    )
    p.add_argument(
        "--tsa-roots",
        type=Path,
        action="append",
        metavar="PEM",
        help="check rfc3161 anchors: TSA root certificate(s) you trust (PEM; repeatable; "
        "needs riverseal[online])",
    )
    p.add_argument(
        "--rpc",
        action="append",
        metavar="URL",
        help="check evm anchors on your own JSON-RPC node (repeatable, one per chain); "
        "needs --trust with evm-sender lines and riverseal[online]",
    )
    p.add_argument(
        "--since-checkpoint",
        type=Path,
        action="append",
        metavar="FILE",
        help="a signed checkpoint you kept from an earlier bundle (repeatable): prove that "
        "SOURCE extends it, or report a fork",
    )
    p.add_argument(
        "--previous",
        action="append",
        metavar="SOURCE",
        help="an earlier bundle, mirror or evidence of the same box (repeatable): prove "
        "that SOURCE extends its newest checkpoint, or report a fork",
    )
    p.add_argument(
        "--save-checkpoint",
        type=Path,
        metavar="FILE",
        help="when nothing failed under your trust file, write the source's newest signed "
        "checkpoint to FILE: keep it, and check the next bundle with --since-checkpoint FILE",
    )
    p.add_argument(
        "--csv",
        type=Path,
        metavar="FILE",
        help="write the verified readings as CSV (docs/verify-reports.md)",
    )
    p.add_argument(
        "--html",
        type=Path,
        metavar="FILE",
        help="write a self-contained HTML report with charts (docs/verify-reports.md)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="worker processes checking signatures (default: every core; 1: none)",
    )
    p.add_argument("--json", action="store_true", help="print a machine-readable verdict")
    return p


def _anchor_checkers(args: argparse.Namespace, trust: TrustList | None) -> list[AnchorChecker]:
    """The online checks asked for on the command line (none: receipts stay unchecked)."""
    checkers: list[AnchorChecker] = []
    if args.tsa_roots:
        checkers.append(TsaChecker(load_tsa_roots(args.tsa_roots)))
    if args.rpc:
        if trust is None:
            raise MalformedTrust("--rpc needs --trust, which names the anchoring addresses")
        checkers.append(EvmChecker(args.rpc, trust))
    return checkers


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _read(path: Path, what: str) -> bytes:
    try:
        if path.stat().st_size > MAX_BUNDLE_BYTES:
            raise _Unreadable(f"{what} {str(path)!r} is larger than {MAX_BUNDLE_BYTES} bytes")
        return path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise _Unreadable(f"cannot read {what} {str(path)!r}: {reason}") from exc


class _Unreadable(Exception):
    """Internal: the input cannot be read; the message is the diagnosis."""


def _load_trust(args: argparse.Namespace) -> TrustList | None:
    if args.trust is None:
        return None
    text = _read(args.trust, "trust file")
    try:
        return parse_trust(text)
    except LedgerClientError as exc:
        raise _Unreadable(f"trust file {args.trust}: {exc}") from exc


class _Progress:
    """Entries checked, rate and time left, rewritten in place on a terminal."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.start = time.monotonic()
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.5 and done < total:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = done / elapsed
        left = (total - done) / rate if rate > 0 and total > done else 0.0
        self.out.write(
            f"\r  {done:,} / {total:,} entries  {rate:,.0f}/s  "
            f"ETA {int(left) // 60}:{int(left) % 60:02d}   "
        )
        self.out.flush()

    def clear(self) -> None:
        if self.last:
            self.out.write("\r" + " " * 64 + "\r")
            self.out.flush()


def main(argv: list[str] | None = None) -> int:
    """Run ``ledger-verify``; return the exit status."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="replace")
    args = _parser().parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        return _unreadable(args, "--jobs must be at least 1")
    try:
        trust = _load_trust(args)
        checkers = _anchor_checkers(args, trust)
        kept = _kept(args)
    except _Unreadable as exc:
        return _unreadable(args, str(exc))
    except LedgerClientError as exc:
        return _unreadable(args, str(exc))
    if not str(args.bundle).startswith(("http://", "https://")):
        path = Path(args.bundle)
        if not path.exists():
            return _unreadable(args, f"cannot read bundle {str(path)!r}: No such file or directory")
        if path.is_dir() and not (path / "riverseal-bundle.json").exists():
            return _unreadable(
                args,
                f"cannot read bundle {str(path)!r}: it is a directory, and not a published "
                "mirror (no riverseal-bundle.json in it)",
            )
    progress = None
    if not args.json and sys.stderr.isatty():
        progress = _Progress(sys.stderr)
    try:
        csv_report = CsvReport(args.csv) if args.csv is not None else None
    except OSError as exc:
        return _unreadable(args, f"--csv {args.csv}: {exc.strerror or exc}")
    html_report = HtmlReport(args.html) if args.html is not None else None
    observers = [o for o in (csv_report, html_report) if o is not None]
    try:
        report = verify_source(
            args.bundle,
            trust,
            now=datetime.now(UTC),
            anchor_checkers=checkers,
            jobs=args.jobs,
            progress=progress,
            kept=kept,
            observer=_Observers(observers) if observers else None,
        )
    except LedgerClientError as exc:
        if csv_report is not None:
            csv_report.abort()
        return _unreadable(args, f"{args.bundle} is not a readable riverseal source: {exc}")
    finally:
        if progress is not None:
            progress.clear()
    written = _write_reports(args, report, csv_report, html_report)
    saved = _save_checkpoint(args, report)
    if args.json:
        _print_json(report.to_json())
    else:
        print_report(report, str(args.bundle), sys.stdout)
        for line in [saved, *written]:
            if line:
                print(line)
    return exit_status(report.level)


class _Observers:
    """Shows every entry to each report being written."""

    def __init__(self, observers: list[CsvReport | HtmlReport]) -> None:
        self.observers = observers

    def entry(self, index: int, rec: tuple[Any, ...] | None, ok: bool) -> None:
        for o in self.observers:
            o.entry(index, rec, ok)


def _write_reports(
    args: argparse.Namespace,
    report: Report,
    csv_report: CsvReport | None,
    html_report: HtmlReport | None,
) -> list[str]:
    """Finish the --csv and --html files; what to tell the user about them. A CSV is
    refused (and says why on stderr) unless the report can name every unproven reading."""
    said: list[str] = []
    if csv_report is not None:
        try:
            rows = csv_report.finish(report)
            said.append(f"wrote {args.csv}: {rows} verified reading value(s)")
        except CsvRefused as exc:
            print(f"{_PROG}: --csv {args.csv}: {exc}", file=sys.stderr)
        except OSError as exc:
            print(f"{_PROG}: --csv {args.csv}: {exc.strerror or exc}", file=sys.stderr)
    if html_report is not None:
        try:
            html_report.finish(report, str(args.bundle))
            said.append(f"wrote {args.html}: the report as a web page")
        except OSError as exc:
            print(f"{_PROG}: --html {args.html}: {exc.strerror or exc}", file=sys.stderr)
    return said


def _save_checkpoint(args: argparse.Namespace, report: Report) -> str | None:
    """Keep the newest checkpoint, only of a source that had no failure under a trust file."""
    path: Path | None = args.save_checkpoint
    if path is None:
        return None
    note = report.newest_note
    if not report.ok or not report.keys_trusted or note is None:
        print(
            f"{_PROG}: --save-checkpoint: not written ({report.level.headline}: only a source "
            "with no failure under your trust file gives a checkpoint worth keeping)",
            file=sys.stderr,
        )
        return None
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(note, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        print(f"{_PROG}: --save-checkpoint {path}: {exc.strerror or exc}", file=sys.stderr)
        return None
    size = Checkpoint.parse(split_note(note)[0]).size
    return f"kept checkpoint {size} in {path}: check the next bundle with --since-checkpoint {path}"


def _kept(args: argparse.Namespace) -> list[KeptCheckpoint]:
    """The checkpoints this source must extend: files kept, and earlier sources' newest."""
    kept: list[KeptCheckpoint] = []
    for path in args.since_checkpoint or ():
        data = _read(path, "checkpoint file")
        if len(data) > MAX_KEPT_NOTE_BYTES:
            raise _Unreadable(f"checkpoint file {path} is larger than {MAX_KEPT_NOTE_BYTES} bytes")
        try:
            kept.append(KeptCheckpoint(data.decode("utf-8"), f"--since-checkpoint {path}"))
        except UnicodeDecodeError as exc:
            raise _Unreadable(f"checkpoint file {path} is not UTF-8 text") from exc
    for source in args.previous or ():
        try:
            note = newest_checkpoint(source)
        except (LedgerClientError, OSError) as exc:
            raise _Unreadable(f"--previous {source} cannot be read: {exc}") from exc
        kept.append(KeptCheckpoint(note, f"--previous {source}"))
    return kept


def _unreadable(args: argparse.Namespace, text: str) -> int:
    message = _one_line(text)
    print(f"{_PROG}: {message}", file=sys.stderr)
    if args.json:
        _print_json(
            {
                "verified": False,
                "level": "unreadable",
                "verdict": "UNREADABLE",
                "error": message,
                "entries": 0,
                "failure_count": 0,
                "failures": [],
            }
        )
    return EXIT_UNREADABLE


def _print_json(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def print_report(report: Report, name: str, out: TextIO) -> None:
    """The human report: summary, numbered checklist, failures, verdict."""
    w = out.write

    def field(label: str, text: str) -> None:
        w(f"{label:<12}{text}\n")

    field("bundle", name)
    field("origin", report.origin)
    field("device", report.device)
    keys = ", ".join(report.keys) or "none"
    if report.keys_trusted:
        field("keys", f"{keys} (from your trust file)")
    else:
        field("keys", f"{keys} (from the bundle itself: NOT independently trusted)")
    if report.first_index is not None:
        field(
            "entries",
            f"{report.entries} (index {report.first_index}–{report.last_index}), "
            f"{report.first_time} to {report.last_time}",
        )
    else:
        field("entries", str(report.entries))
    field("checkpoints", ", ".join(str(s) for s in report.checkpoints) or "none")
    if report.sensors:
        parts = []
        for sensor, c in sorted(report.sensors.items()):
            gaps = f", {c.gaps} gap{'s' if c.gaps != 1 else ''}" if c.gaps else ""
            parts.append(f"{sensor} {c.readings} reading{'s' if c.readings != 1 else ''}{gaps}")
        field("sensors", "; ".join(parts))
    for a in report.anchors:
        text = f"checkpoint {a.checkpoint}, {a.backend} ({a.state}): {a.status}"
        if a.verified:
            text += f" at {a.time}: {a.detail}"
        field("anchor", text)
    for r in report.recorded_by:
        field("recorded", f"entries {r.first}–{r.last} no later than {r.time} ({r.backend})")
    _print_sensors(report, w)
    _print_timeline(report, w)
    w("\n")
    width = max(len(s.name) for s in report.steps)
    for s in report.steps:
        mark = (
            ("✓" if not s.skipped else "–") if s.ok else "✗"
        )  # –: nothing failed, not all checked
        counts = f"{s.passed} passed"
        if s.failed:
            counts += f", {s.failed} failed"
        if s.skipped:
            counts += f", {s.skipped} not checked"
        w(f" {s.number} {mark} {s.name:<{width}}  {counts}\n")
    if report.notes:
        w("\n")
        for note in report.notes:
            w(f"note: {note}\n")
    for text in report.linked:
        w(f"linked: {text}\n")
    for fork in report.forks:
        w(f"\nFORK: {fork.reason}. Both checkpoints are validly signed:\n")
        for size, source, note in (
            (fork.size_a, fork.source_a, fork.note_a),
            (fork.size_b, fork.source_b, fork.note_b),
        ):
            w(f"  checkpoint {size} ({source}):\n")
            for line in note.rstrip("\n").split("\n"):
                w(f"    {line}\n")
    if report.failures:
        w("\n")
        for f in report.failures[:MAX_PRINTED_FAILURES]:
            w(f"  {f.described()}\n")
        more = report.failure_count - MAX_PRINTED_FAILURES
        if more > 0:
            w(f"  … and {more} more\n")
    w("\n")
    w(verdict_line(report) + "\n")


_QC_NAMES = {"1": "pass", "2": "not evaluated", "3": "suspect", "4": "fail", "9": "missing"}
MAX_PRINTED_GAP_SPANS = 20
MAX_PRINTED_EVENTS = 50


def _print_sensors(report: Report, w: Callable[[str], object]) -> None:
    """Per sensor: its readings' span, QC flags, clock, late arrivals and each gap."""
    if not report.sensors:
        return
    w("\nper sensor\n")
    for sensor, c in sorted(report.sensors.items()):
        parts = [f"{c.readings} reading{'s' if c.readings != 1 else ''}"]
        if c.first is not None:
            parts[0] += f" from {c.first} to {c.last}"
        flags = ", ".join(
            f"{n} {_QC_NAMES.get(flag, 'flag ' + flag)}" for flag, n in sorted(c.qc.items())
        )
        if flags:
            parts.append(f"QC values: {flags}")
        if c.unsynced:
            parts.append(f"{c.unsynced} made with the gateway clock not synced")
        if c.late:
            parts.append(f"{c.late} arrived late (out of order)")
        parts.append(f"{c.gaps} gap record{'s' if c.gaps != 1 else ''}")
        w(f"  {sensor}: {'; '.join(parts)}\n")
        for g in c.gap_spans[:MAX_PRINTED_GAP_SPANS]:
            n = f"{g.records} records" if g.records != 1 else "1 record"
            w(f"    gap {g.start} to {g.end}: {g.reason} ({n})\n")
        more = len(c.gap_spans) - MAX_PRINTED_GAP_SPANS + c.gap_spans_more
        if more > 0:
            w(f"    … and {more} more gap spans (--json or --html lists them)\n")


def _print_timeline(report: Report, w: Callable[[str], object]) -> None:
    """Boots, stops, configuration changes, key rotations, history resets."""
    timeline = report.timeline
    if not timeline:
        return
    w("\ntimeline\n")
    for e in timeline[:MAX_PRINTED_EVENTS]:
        w(f"  entry {e.index}, {e.time}: {e.describe()}\n")
    if len(timeline) > MAX_PRINTED_EVENTS:
        w(f"  … and {len(timeline) - MAX_PRINTED_EVENTS} more events (--json lists them)\n")


def verdict_line(report: Report) -> str:
    """The last line of the human report: the level and what it means."""
    level = report.level
    span = (
        f"{report.entries} entries from device {report.device}, "
        f"{report.first_time} to {report.last_time}"
    )
    if level is Level.VERIFIED:
        return f"VERIFIED: {span}"
    if level is Level.AUTHENTIC_UNDATED:
        return (
            f"AUTHENTIC, NOT INDEPENDENTLY DATED: {span}; no anchor was checked against an "
            "independent ledger, so when they were recorded rests on the box's clock "
            "(give --tsa-roots or --rpc)"
        )
    if level is Level.UNTRUSTED_KEY:
        return (
            f"UNTRUSTED KEY: {span}, consistent under the bundle's own keys, which are NOT "
            "independently trusted (give --trust with the keys you hold for this box)"
        )
    n = report.failure_count
    problems = f"{n} problem{'s' if n != 1 else ''}"
    if level is Level.FORKED:
        return f"FORKED HISTORY: {len(report.forks)} fork(s) proven; {problems}"
    return f"FAILED: {problems}"
