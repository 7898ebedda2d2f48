"""``ledger-verify``: check a riverseal bundle offline and say what holds.

    ledger-verify BUNDLE [--trust FILE] [--tsa-roots PEM] [--rpc URL] [--json]

Exit status: 0 everything verified; 1 something failed verification (each
failure names the entry or checkpoint, the check and the reason); 2 the input
could not be read (missing file, not JSON, unknown format or version, bad trust
file), with a one-line diagnosis on stderr.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from .anchors import AnchorChecker
from .bundle import MAX_BUNDLE_BYTES, Bundle
from .errors import LedgerClientError
from .evm import EvmChecker
from .trust import MalformedTrust, TrustList, parse_trust
from .tsa import TsaChecker, load_tsa_roots
from .verify import Report, verify_bundle

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_UNREADABLE", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNREADABLE = 2
MAX_PRINTED_FAILURES = 50

_PROG = "ledger-verify"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=_PROG,
        description="Verify a riverseal bundle offline: record signatures, Merkle inclusion, "
        "signed checkpoints, consistency, anchors and completeness.",
        epilog="exit status: 0 verified, 1 verification failed, 2 input unreadable",
    )
    p.add_argument("bundle", type=Path, metavar="BUNDLE", help="the bundle file (JSON)")
    p.add_argument(
        "--trust",
        type=Path,
        metavar="FILE",
        help="trust file with the device keys you trust (lines: key <vkey> [from [until]]); "
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


def _load(args: argparse.Namespace) -> tuple[Bundle, TrustList | None]:
    data = _read(args.bundle, "bundle")
    try:
        bundle = Bundle.loads(data)
    except LedgerClientError as exc:
        raise _Unreadable(f"{args.bundle} is not a readable riverseal bundle: {exc}") from exc
    trust = None
    if args.trust is not None:
        text = _read(args.trust, "trust file")
        try:
            trust = parse_trust(text)
        except LedgerClientError as exc:
            raise _Unreadable(f"trust file {args.trust}: {exc}") from exc
    return bundle, trust


def main(argv: list[str] | None = None) -> int:
    """Run ``ledger-verify``; return the exit status."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="replace")
    args = _parser().parse_args(argv)
    try:
        bundle, trust = _load(args)
    except _Unreadable as exc:
        message = _one_line(str(exc))
        print(f"{_PROG}: {message}", file=sys.stderr)
        if args.json:
            _print_json({"verified": False, "error": message, "entries": 0, "failures": []})
        return EXIT_UNREADABLE
    try:
        checkers = _anchor_checkers(args, trust)
    except LedgerClientError as exc:
        message = _one_line(str(exc))
        print(f"{_PROG}: {message}", file=sys.stderr)
        if args.json:
            _print_json({"verified": False, "error": message, "entries": 0, "failures": []})
        return EXIT_UNREADABLE
    report = verify_bundle(bundle, trust, now=datetime.now(UTC), anchor_checkers=checkers)
    if args.json:
        _print_json(report.to_json())
    else:
        print_report(report, str(args.bundle), sys.stdout)
    return EXIT_OK if report.verified else EXIT_FAILED


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
    w("\n")
    width = max(len(s.name) for s in report.steps)
    for s in report.steps:
        mark = "✓" if s.ok else "✗"
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
    if report.failures:
        w("\n")
        for f in report.failures[:MAX_PRINTED_FAILURES]:
            w(f"  {f}\n")
        more = len(report.failures) - MAX_PRINTED_FAILURES
        if more > 0:
            w(f"  … and {more} more\n")
    w("\n")
    if report.verified:
        trust = "" if report.keys_trusted else " (keys NOT independently trusted)"
        w(
            f"VERIFIED: {report.entries} entries from device {report.device}, "
            f"{report.first_time} to {report.last_time}{trust}\n"
        )
    else:
        n = len(report.failures)
        w(f"FAILED: {n} problem{'s' if n != 1 else ''}\n")
