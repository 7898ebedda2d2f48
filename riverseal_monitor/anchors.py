"""When a box's checkpoints were anchored, read from its published manifest (docs/monitor.md §9).

The box's ``riverseal-bundle.json`` lists its anchor receipts with the
checkpoint notes they commit to. ``AnchorBook.read`` checks, per receipt, what
can be checked offline, as ``ledger-verify`` does without its online checkers:
the checkpoint it names is in the manifest, signed by the box under its trusted
keys and of its origin, and the receipt's digest is that checkpoint's digest.
Then the receipt itself, by backend:

- ``local``: the box's own journal: a name, a sequence number, an RFC 3339
  time, state final. Status ``local``: the time is the box's word.
- ``evm:<chain>``: the calldata must commit to the digest and the checkpoint's
  size; the time is the block time the receipt names. Status ``unchecked``:
  the chain itself is asked only by ``ledger-verify --evm-rpc``.
- ``rfc3161:<tsa>``: the time is the token's own genTime (from its signed
  TSTInfo). Status ``unchecked``: the token's signature and chain are checked
  by ``ledger-verify --tsa-roots``.
- anything else: ``unchecked``, with no time.

A receipt that fails a check is kept with status ``failed: <why>`` (the page
shows it), never with a time, and is a ``bad-anchor`` alert (``anchor_alerts``)
until the box publishes a receipt for that checkpoint and backend that passes.
Receipts still ``pending`` (nothing anchored yet) are left out. The book
remembers what it read, so an unchanged receipt is not checked again at the
next read: a manifest holds up to 10,000 of them.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass

from ledger_client.bundle import AnchorReceipt
from ledger_client.bundle_v2 import Manifest
from ledger_client.checkpoint import Checkpoint
from ledger_client.der_sets import token_gen_time
from ledger_client.errors import LedgerClientError
from ledger_client.evm import parse_anchor_calldata
from ledger_client.note import Verifier, open_note, split_note
from ledger_client.records import parse_time

from .follow import Alert

__all__ = ["AnchorBook", "AnchorMark", "anchor_alerts"]

FAILED = "failed: "
"""How the status of a receipt failing an offline check begins."""

ANCHORED_STATES = ("included", "final")
"""Receipt states with a ledger time (``pending``: sent, not anchored yet)."""


@dataclass(frozen=True)
class AnchorMark:
    """One anchored checkpoint as the page shows it."""

    checkpoint: int
    """The size of the checkpoint anchored."""
    backend: str
    """``local``, ``evm:<chain>``, ``rfc3161:<tsa>``…"""
    state: str
    """The box's word on the receipt: ``included`` or ``final``."""
    time_s: float | None
    """When it was anchored (POSIX seconds): the journal, block or token time; None if
    the receipt gives none or failed a check."""
    status: str
    """``local``, ``unchecked`` (offline checks passed) or ``failed: <why>``."""


class AnchorBook:
    """The anchors of one box, as last read from its manifest."""

    def __init__(self, origin: str, verifiers: Sequence[Verifier]) -> None:
        self.origin = origin
        self._verifiers = list(verifiers)
        self._seen: dict[tuple[int, str], tuple[AnchorReceipt, AnchorMark]] = {}

    def read(self, data: bytes) -> list[AnchorMark]:
        """The anchors of the manifest ``data`` that are new or changed since the last
        read. Raises LedgerClientError for a manifest that cannot be read."""
        manifest = Manifest.loads(data)
        notes: dict[int, str] | None = None
        out: list[AnchorMark] = []
        for a in manifest.anchors:
            if a.state not in ANCHORED_STATES:
                continue
            key = (a.checkpoint, a.backend)
            known = self._seen.get(key)
            if known is not None and known[0] == a:
                continue
            if notes is None:
                notes = _notes_by_size(manifest.checkpoints)
            mark = self._check(a, notes.get(a.checkpoint))
            self._seen[key] = (a, mark)
            out.append(mark)
        return out

    def forget(self, marks: Sequence[AnchorMark]) -> None:
        """``marks`` were not stored: the next read returns them again."""
        for m in marks:
            self._seen.pop((m.checkpoint, m.backend), None)

    def _check(self, a: AnchorReceipt, note: str | None) -> AnchorMark:
        problem = self._checkpoint_problem(a, note)
        if problem is None:
            try:
                time_s, status = _receipt_time(a)
            except _Failed as exc:
                problem = str(exc)
            else:
                return AnchorMark(a.checkpoint, a.backend, a.state, time_s, status)
        return AnchorMark(a.checkpoint, a.backend, a.state, None, f"{FAILED}{problem}")

    def _checkpoint_problem(self, a: AnchorReceipt, note: str | None) -> str | None:
        if note is None:
            return f"checkpoint {a.checkpoint} is not in the manifest"
        try:
            cp = Checkpoint.parse(open_note(note, self._verifiers))
        except LedgerClientError as exc:
            return f"checkpoint {a.checkpoint} does not verify under the box's keys: {exc}"
        if cp.origin != self.origin:
            return f"checkpoint {a.checkpoint} names origin {cp.origin!r}"
        if a.digest != cp.digest():
            return f"the digest is not checkpoint {a.checkpoint}'s"
        return None


class _Failed(Exception):
    """A receipt failing an offline check (caught in AnchorBook._check)."""


def anchor_alerts(
    origin: str, marks: Sequence[AnchorMark], now: float
) -> tuple[list[Alert], list[str]]:
    """The ``bad-anchor`` alerts of newly read ``marks``, and the keys they clear: a
    receipt read again that passes clears its checkpoint and backend's alert."""
    raised: list[Alert] = []
    cleared: list[str] = []
    for m in marks:
        key = f"bad-anchor:{m.checkpoint}:{m.backend}"
        if not m.status.startswith(FAILED):
            cleared.append(key)
            continue
        why = m.status.removeprefix(FAILED)
        raised.append(
            Alert(
                origin,
                "bad-anchor",
                key,
                now,
                f"checkpoint {m.checkpoint}: the {m.backend} receipt fails its offline "
                f"check: {why}",
                size=m.checkpoint,
                detail=(("backend", m.backend), ("state", m.state), ("why", why)),
            )
        )
    return raised, cleared


def _notes_by_size(notes: Sequence[str]) -> dict[int, str]:
    """The manifest's notes by the size they claim (verified only when used)."""
    out: dict[int, str] = {}
    for note in notes:
        try:
            out[Checkpoint.parse(split_note(note)[0]).size] = note
        except (LedgerClientError, ValueError):
            continue  # unreadable: an anchor naming its size finds no note
    return out


def _receipt_time(a: AnchorReceipt) -> tuple[float | None, str]:
    """The anchoring time a receipt states and the status of its offline checks."""
    r = a.receipt
    if a.backend == "local":
        journal, seq = r.get("journal"), r.get("seq")
        if not isinstance(journal, str) or not journal:
            raise _Failed("the receipt has no journal name")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise _Failed("the receipt's seq is not a non-negative integer")
        if a.state != "final":
            raise _Failed(f"a local anchor is final once journalled, not {a.state!r}")
        return _time(r.get("time")), "local"
    if a.backend.startswith("evm:"):
        calldata = str(r.get("calldata", ""))
        try:
            digest, size = parse_anchor_calldata(bytes.fromhex(calldata.removeprefix("0x")))
        except (ValueError, LedgerClientError) as exc:
            raise _Failed(f"the receipt's calldata cannot be read: {exc}") from exc
        if (digest, size) != (a.digest, a.checkpoint):
            raise _Failed("the calldata commits to another digest or size")
        return _time(r.get("block_time")), "unchecked"
    if a.backend.startswith("rfc3161:"):
        try:
            token = base64.b64decode(str(r.get("token", "")), validate=True)
            return token_gen_time(token).timestamp(), "unchecked"
        except (binascii.Error, ValueError) as exc:  # a DerError is a ValueError
            raise _Failed(f"the receipt's token cannot be read: {exc}") from exc
    return None, "unchecked"


def _time(text: object) -> float:
    try:
        return parse_time(str(text)).timestamp()
    except LedgerClientError as exc:
        raise _Failed(f"the receipt's time {text!r} is not RFC 3339 UTC") from exc
