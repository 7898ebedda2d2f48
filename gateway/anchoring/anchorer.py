"""The anchoring state machine: pending → included → final, persisted in the store.

For each backend the newest checkpoint is what gets anchored: one anchor
covers every entry before it, so after an outage the box sends one anchor,
not a backlog. One anchor is in flight per backend; the next is the newest
checkpoint once it is final. An anchor already final is never submitted
again; a pending or included one is polled until it is final, and may fall
back from included to pending when a reorg drops it (the backend sends the
same digest again). An anchor row whose receipt is still empty never reached
the ledger: it is submitted again if it is still the newest checkpoint, and
dropped if a newer checkpoint exists (that one covers it). Failures back off
with capped, jittered exponential delays per backend, and never stop ingest.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger_client.checkpoint import Checkpoint
from ledger_client.note import split_note
from ledger_client.records import format_time

from ..backoff import Backoff
from ..errors import AnchorError, StoreError
from ..store import AnchorRow, CheckpointRow, Store
from .backend import AnchorBackend, AnchorProgress

__all__ = ["Anchorer", "BackendStatus", "open_anchor_summary"]

logger = logging.getLogger(__name__)

_EMPTY_RECEIPT = "{}"


@dataclass
class BackendStatus:
    """What ``gateway status`` shows for one ledger."""

    name: str
    last_final: int | None = None
    """Size of the newest checkpoint whose anchor is final."""
    last_final_at: str | None = None
    """When that anchor became final (gateway clock)."""
    pending: list[int] = field(default_factory=list)
    """Checkpoint sizes of anchors not final yet (at most one in flight, normally)."""
    open: list[dict[str, Any]] = field(default_factory=list)
    """Details of those anchors: state, since when, transaction hashes, error."""
    last_error: str | None = None
    """The latest problem; cleared when an anchor reaches final again."""
    last_error_at: str | None = None
    failures: int = 0
    """Consecutive failed passes (0: healthy)."""
    next_try: float = 0.0
    backoff: Backoff = field(default_factory=Backoff)

    def to_json(self, now_monotonic: float | None = None) -> dict[str, Any]:
        now = time.monotonic() if now_monotonic is None else now_monotonic
        return {
            "last_final": self.last_final,
            "last_final_at": self.last_final_at,
            "pending": list(self.pending),
            "open": list(self.open),
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "failures": self.failures,
            "retry_in_s": round(self.next_try - now, 1) if self.next_try > now else None,
        }


def open_anchor_summary(row: AnchorRow) -> dict[str, Any]:
    """One open anchor for a status display: its state, age, transactions and error."""
    out: dict[str, Any] = {
        "checkpoint": row.checkpoint,
        "state": row.state,
        "since": format_time(row.created_ns),
        "attempts": row.attempts,
    }
    try:
        receipt = json.loads(row.receipt)
    except ValueError:
        receipt = {}
    if isinstance(receipt, dict):
        sent = receipt.get("sent")
        if isinstance(sent, list) and sent:
            out["sent"] = len(sent)
            out["last_sent"] = sent[-1].get("hash") if isinstance(sent[-1], dict) else None
        for key in ("tx", "block"):
            if key in receipt:
                out[key] = receipt[key]
    if row.last_error:
        out["error"] = row.last_error
    return out


def _digest(cp: CheckpointRow) -> bytes:
    return Checkpoint.parse(split_note(cp.note)[0]).digest()


class Anchorer:
    def __init__(
        self,
        store: Store,
        backends: Sequence[AnchorBackend],
        *,
        retry_max_seconds: float = 300.0,
        poll_seconds: float = 5.0,
        clock: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.backends = list(backends)
        self.poll_seconds = poll_seconds
        self._clock = clock
        self._monotonic = monotonic
        self._wake = asyncio.Event()
        self.status = {
            b.name: BackendStatus(b.name, backoff=Backoff(base_s=1.0, cap_s=retry_max_seconds))
            for b in self.backends
        }

    def notify(self, _cp: CheckpointRow | None = None) -> None:
        """A new checkpoint exists; look at it soon."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self.step()
            self._wake.clear()
            delay = self.poll_seconds
            for backend in self.backends:
                st = self.status[backend.name]
                if st.next_try > self._monotonic():
                    delay = min(delay, st.next_try - self._monotonic())
                elif st.pending:
                    delay = min(delay, getattr(backend, "poll_seconds", delay))
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
            # cancellation that races with the event being set.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(delay, 0.05)):
                    await self._wake.wait()

    async def step(self) -> None:
        """One pass: for every backend, poll open anchors and anchor the newest checkpoint."""
        try:
            latest = await self.store.latest_checkpoint()
        except StoreError as exc:
            logger.warning("anchoring: cannot read the latest checkpoint: %s", exc)
            return
        for backend in self.backends:
            st = self.status[backend.name]
            if st.next_try > self._monotonic():
                continue
            try:
                await self._step_backend(backend, latest)
            # A receipt that cannot be stored (disk full, I/O error) is retried like a ledger
            # that cannot be reached: the anchor stays open, nothing is lost.
            except (AnchorError, StoreError) as exc:
                st.failures += 1
                self._error(st, str(exc))
                delay = st.backoff.next_delay()
                st.next_try = self._monotonic() + delay
                logger.warning("anchor %s: %s (retry in %.1f s)", backend.name, exc, delay)
            else:
                st.failures = 0
                st.next_try = 0.0
                st.backoff.reset()

    def _error(self, st: BackendStatus, message: str) -> None:
        st.last_error = message
        st.last_error_at = format_time(self._clock())

    async def _step_backend(self, backend: AnchorBackend, latest: CheckpointRow | None) -> None:
        st = self.status[backend.name]
        try:
            for row in await self.store.open_anchors(backend.name):
                if row.receipt != _EMPTY_RECEIPT:
                    await self._advance(backend, row, await backend.poll(row.digest, _load(row)))
                elif latest is not None and row.checkpoint < latest.size:
                    # Never reached the ledger, and a newer checkpoint covers it.
                    await self.store.drop_unsent_anchor(row.checkpoint, backend.name)
                else:
                    await self._submit(backend, row)
            await self._refresh(st)
            _, newest = await self.store.anchor_marks(backend.name)
            if latest is None or (newest is not None and newest >= latest.size) or st.pending:
                return  # nothing new, or one anchor in flight: the newest goes next
            now = self._clock()
            row = AnchorRow(
                latest.size,
                backend.name,
                _digest(latest),
                "pending",
                _EMPTY_RECEIPT,
                0,
                None,
                now,
                now,
            )
            await self.store.put_anchor(row)
            await self._submit(backend, row)
        finally:
            await self._refresh(st)

    async def _submit(self, backend: AnchorBackend, row: AnchorRow) -> None:
        row = _replace(row, attempts=row.attempts + 1, updated_ns=self._clock())
        await self.store.put_anchor(row)
        try:
            progress = await backend.submit(row.digest, row.checkpoint)
        except AnchorError as exc:
            await self.store.put_anchor(
                _replace(row, last_error=str(exc), updated_ns=self._clock())
            )
            raise
        await self._advance(backend, row, progress)

    async def _advance(self, backend: AnchorBackend, row: AnchorRow, p: AnchorProgress) -> None:
        receipt = json.dumps(dict(p.receipt), sort_keys=True)
        if p.state == row.state and receipt == row.receipt and p.error == row.last_error:
            return
        await self.store.put_anchor(
            _replace(
                row, state=p.state, receipt=receipt, last_error=p.error, updated_ns=self._clock()
            )
        )
        st = self.status[backend.name]
        if p.error:
            self._error(st, p.error)
            logger.warning("anchor %s: checkpoint %d: %s", backend.name, row.checkpoint, p.error)
        if row.state == "included" and p.state == "pending":
            logger.warning(
                "anchor %s: checkpoint %d left the ledger (reorg)", backend.name, row.checkpoint
            )
        elif p.state != row.state:
            logger.info("anchor %s: checkpoint %d is %s", backend.name, row.checkpoint, p.state)
        if p.state == "final":
            st.last_error = st.last_error_at = None

    async def _refresh(self, st: BackendStatus) -> None:
        rows = await self.store.open_anchors(st.name)
        st.pending = [r.checkpoint for r in rows]
        st.open = [open_anchor_summary(r) for r in rows]
        final = await self.store.last_final_anchor(st.name)
        st.last_final = final.checkpoint if final else None
        st.last_final_at = format_time(final.updated_ns) if final else None


def _load(row: AnchorRow) -> dict[str, Any]:
    receipt = json.loads(row.receipt)
    if not isinstance(receipt, dict):
        raise AnchorError(f"anchor of checkpoint {row.checkpoint}: stored receipt is not an object")
    return receipt


def _replace(row: AnchorRow, **changes: object) -> AnchorRow:
    return dataclasses.replace(row, **changes)  # type: ignore[arg-type]
