"""The anchoring state machine: pending → included → final, persisted in the store.

For each backend the newest checkpoint is what gets anchored: one anchor
covers every entry before it, so after an outage the box sends one anchor,
not a backlog. An anchor already final is never submitted again; a pending
or included one is polled until it is final. Failures back off with capped,
jittered exponential delays per backend, and never stop ingest.
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

from ledger_client.checkpoint import Checkpoint
from ledger_client.note import split_note

from ..backoff import Backoff
from ..errors import AnchorError, LedgerRejected
from ..store import AnchorRow, CheckpointRow, Store
from .backend import AnchorBackend, AnchorProgress

__all__ = ["Anchorer", "BackendStatus"]

log = logging.getLogger(__name__)


@dataclass
class BackendStatus:
    name: str
    last_final: int | None = None
    pending: list[int] = field(default_factory=list)
    last_error: str | None = None
    failures: int = 0
    next_try: float = 0.0
    backoff: Backoff = field(default_factory=Backoff)


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
            for st in self.status.values():
                if st.next_try > self._monotonic():
                    delay = min(delay, st.next_try - self._monotonic())
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
            # cancellation that races with the event being set.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(delay, 0.05)):
                    await self._wake.wait()

    async def step(self) -> None:
        """One pass: for every backend, anchor the newest checkpoint and poll open anchors."""
        latest = await self.store.latest_checkpoint()
        for backend in self.backends:
            st = self.status[backend.name]
            if st.next_try > self._monotonic():
                continue
            try:
                await self._step_backend(backend, latest)
            except AnchorError as exc:
                st.failures += 1
                st.last_error = str(exc)
                delay = st.backoff.next_delay()
                st.next_try = self._monotonic() + delay
                log.warning("anchor %s: %s (retry in %.1f s)", backend.name, exc, delay)
            else:
                st.failures = 0
                st.next_try = 0.0
                st.backoff.reset()

    async def _step_backend(self, backend: AnchorBackend, latest: CheckpointRow | None) -> None:
        st = self.status[backend.name]
        for row in await self.store.open_anchors(backend.name):
            receipt = json.loads(row.receipt)
            await self._advance(backend, row, await backend.poll(row.digest, receipt))
        st.pending = [r.checkpoint for r in await self.store.open_anchors(backend.name)]
        st.last_final, newest = await self.store.anchor_marks(backend.name)
        if latest is None or (newest is not None and newest >= latest.size):
            return
        if st.pending:
            return  # one anchor in flight per backend; the newest goes next
        digest = _digest(latest)
        now = self._clock()
        row = AnchorRow(latest.size, backend.name, digest, "pending", "{}", 1, None, now, now)
        await self.store.put_anchor(row)
        try:
            progress = await backend.submit(digest, latest.size)
        except LedgerRejected as exc:
            await self.store.put_anchor(
                _replace(row, last_error=str(exc), updated_ns=self._clock())
            )
            raise
        await self._advance(backend, row, progress)
        st.last_error = None

    async def _advance(self, backend: AnchorBackend, row: AnchorRow, p: AnchorProgress) -> None:
        if p.state == row.state and dict(p.receipt) == json.loads(row.receipt):
            return
        await self.store.put_anchor(
            _replace(
                row,
                state=p.state,
                receipt=json.dumps(dict(p.receipt), sort_keys=True),
                last_error=None,
                updated_ns=self._clock(),
            )
        )
        st = self.status[backend.name]
        if p.state == "final":
            st.last_final = max(st.last_final or 0, row.checkpoint)
            log.info("anchor %s: checkpoint %d is final", backend.name, row.checkpoint)


def _replace(row: AnchorRow, **changes: object) -> AnchorRow:
    return dataclasses.replace(row, **changes)  # type: ignore[arg-type]
