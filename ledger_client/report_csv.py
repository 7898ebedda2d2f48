"""The verified readings as CSV, one row per value (``ledger-verify --csv FILE``).

``CsvReport(path)`` is an EntryObserver: while the checklist runs it writes the
values of every reading that passed steps 2–4 to ``<path>.tmp``; ``finish(report)``
then drops the rows of every entry the Report names as failed and renames the file
into place. Memory does not grow with the number of entries.

A regulator must never find an unproven row in this file, so ``finish`` writes no
file at all, raises CsvRefused, and removes any earlier file at ``path`` when the
Report cannot say which entries failed: failures were counted beyond the ones it
lists, a failure names no entry (the tree, a checkpoint, consistency: then no
reading is proven), or the keys came from the bundle itself. docs/verify-reports.md
describes the columns and the rule.
"""

from __future__ import annotations

import contextlib
import csv
import os
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from .canonical import format_number

__all__ = [
    "COLUMNS",
    "QUALITY_MISSING",
    "QUALITY_UNCHECKED",
    "WATERML_QUALITY",
    "CsvRefused",
    "CsvReport",
    "ReportLike",
    "unproven_reason",
]

COLUMNS = (
    "index",
    "sensor",
    "time",
    "quantity",
    "unit",
    "value",
    "qartod_flag",
    "waterml_quality",
    "clock",
)

_WML = "http://www.opengis.net/def/waterml/2.0/quality/"
QUALITY_UNCHECKED = _WML + "unchecked"
QUALITY_MISSING = "http://www.opengis.net/def/nil/OGC/0/missing"
"""WaterML 2.0 (OGC 10-126r4, table 5) names its "Missing" category with the OGC nil
reason, not a URI under .../quality/."""

WATERML_QUALITY: dict[int | None, str] = {
    1: _WML + "good",
    2: QUALITY_UNCHECKED,
    3: _WML + "suspect",
    4: _WML + "poor",
    9: QUALITY_MISSING,
    None: QUALITY_UNCHECKED,  # a value without qc: no test ran on it
}
"""The WaterML 2.0 quality code of each QARTOD flag (docs/bundle-format.md §4.2.1)."""

_ENTRYLESS_OK = frozenset({"anchors"})
"""Checks whose failures may name no entry and still leave every entry proven: an
anchor receipt is about when checkpoints were recorded, not about the entries."""


class CsvRefused(Exception):
    """``finish`` wrote no CSV: the Report cannot say which readings are proven.
    The message says why, for a person."""


class ReportLike(Protocol):
    """What ``finish`` reads of a Report (verify.Report has it)."""

    @property
    def failures(self) -> tuple[Any, ...]: ...
    @property
    def failure_count(self) -> int: ...
    @property
    def keys_trusted(self) -> bool: ...


def unproven_reason(report: ReportLike, *, allow_untrusted_keys: bool = False) -> str | None:
    """Why no reading of this Report may be called verified, or None when the readings
    of every entry its failures do not name are proven."""
    if report.failure_count > len(report.failures):
        return (
            f"{report.failure_count} failures were found but only {len(report.failures)} "
            "are listed, so the failed entries are not all known"
        )
    for f in report.failures:
        if f.entry is None and f.check not in _ENTRYLESS_OK:
            return f"a failure names no entry, so no reading is proven: {f.described()}"
    if not report.keys_trusted and not allow_untrusted_keys:
        return (
            "the keys came from the bundle itself, so anyone could have made it "
            "(give the trust file of the device keys you trust)"
        )
    return None


def _value_text(v: Any) -> str:
    if v is None:
        return ""
    try:
        return format_number(v)  # the number as the signed record writes it
    except (ValueError, TypeError):
        return str(v)


class CsvReport:
    """Writes the verified readings of one verification to ``path`` as CSV.

    Pass it as the ``observer`` of ``verify_source``, then call ``finish(report)``
    with the Report; ``abort()`` (or leaving a ``with`` block without finishing)
    removes the temporary file. ``allow_untrusted_keys``: write the rows even when
    the keys came from the bundle itself (for demonstrations; the file then proves
    nothing about who made them).
    """

    def __init__(self, path: str | os.PathLike[str], *, allow_untrusted_keys: bool = False) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.allow_untrusted_keys = allow_untrusted_keys
        # errors="backslashreplace": a lone surrogate (legal in a JSON string, with no
        # UTF-8 form) is written as the \udxxx escape the record itself holds.
        self._file: Any = self.tmp.open(
            "w", encoding="utf-8", errors="backslashreplace", newline=""
        )
        self._writer = csv.writer(self._file, lineterminator="\r\n")
        self._writer.writerow(COLUMNS)
        self.rows = 0
        self._lo: int | None = None  # the smallest and largest index written
        self._hi: int | None = None
        self._missing_values = False
        self._done = False

    def __enter__(self) -> CsvReport:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._done:
            self.abort()

    def entry(self, index: int, rec: tuple[Any, ...] | None, ok: bool) -> None:
        """One entry, in log order (EntryObserver)."""
        if not ok or rec is None or rec[1] != "reading":
            return
        values = rec[10]
        if values is None:  # the checklist was not asked for values: nothing to write
            self._missing_values = True
            return
        sensor, time = rec[2], rec[6]
        clock = "synced" if rec[8] else "not-synced"
        writerow = self._writer.writerow
        for quantity, unit, value, flag in values:
            if value is None:
                flag = 9  # §4.2.1: a null value is flagged missing
            writerow(
                (
                    index,
                    sensor,
                    time,
                    quantity,
                    unit,
                    _value_text(value),
                    "" if flag is None else flag,
                    WATERML_QUALITY.get(flag, QUALITY_UNCHECKED),
                    clock,
                )
            )
        self.rows += len(values)
        if self._lo is None or index < self._lo:
            self._lo = index
        if self._hi is None or index > self._hi:
            self._hi = index

    def abort(self) -> None:
        """Stop without writing ``path``: the temporary file is removed."""
        self._done = True
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()

    def finish(self, report: ReportLike) -> int:
        """Drop the rows of the entries ``report`` names as failed, move the file into
        place and return the number of rows written. Raises CsvRefused (writing
        nothing, and removing any earlier file at ``path``) when the Report cannot
        say which readings are proven."""
        if self._done:
            raise ValueError("this CsvReport has already finished")
        reason = unproven_reason(report, allow_untrusted_keys=self.allow_untrusted_keys)
        if reason is None and self._missing_values:
            reason = "the verifier was not asked for the readings' values"
        if reason is not None:
            self.abort()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            raise CsvRefused(f"no CSV written: {reason}")
        self._done = True
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        failed = {f.entry for f in report.failures if f.entry is not None}
        lo, hi = self._lo, self._hi
        if lo is not None and hi is not None and any(lo <= i <= hi for i in failed):
            self._drop(failed)
        os.replace(self.tmp, self.path)
        return self.rows

    def _drop(self, failed: set[int]) -> None:
        """Rewrite the temporary file without the rows of ``failed`` entries."""
        kept = self.path.with_name(self.path.name + ".tmp2")
        rows = 0
        try:
            with (
                self.tmp.open(encoding="utf-8", newline="") as src,
                kept.open("w", encoding="utf-8", newline="") as dst,
            ):
                reader = csv.reader(src)
                writer = csv.writer(dst, lineterminator="\r\n")
                writer.writerow(next(reader))
                for row in reader:
                    if int(row[0]) not in failed:
                        writer.writerow(row)
                        rows += 1
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(kept, self.tmp)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                kept.unlink()
            with contextlib.suppress(FileNotFoundError):
                self.tmp.unlink()
            raise
        self.rows = rows
