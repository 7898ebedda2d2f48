"""Group commit: many sources submit, one writer commits them in batches.

Each ``submit`` waits until its reading is committed (that is when the source
may acknowledge it). The writer drains whatever is queued, up to
``max_batch``, into one transaction, so the cost of an fsync is shared by
every reading that arrived while the previous one ran. The writer also
decides when a checkpoint is due (every N entries or T seconds).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from .config import LogConfig
from .errors import GatewayError
from .log import Log, LogItem
from .sources.base import Event, Gap, Reading
from .store import CheckpointRow

__all__ = ["Ingest", "IngestStats"]

log = logging.getLogger(__name__)


@dataclass
class IngestStats:
    committed: int = 0
    duplicates: int = 0
    batches: int = 0
    failed_batches: int = 0
    checkpoints: int = 0


class Ingest:
    """The Sink that sources write to, and the writer task behind it."""

    def __init__(
        self,
        log_: Log,
        config: LogConfig,
        *,
        on_checkpoint: Callable[[CheckpointRow], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log_
        self.config = config
        self._on_checkpoint = on_checkpoint
        self._monotonic = monotonic
        self._queue: asyncio.Queue[tuple[LogItem, asyncio.Future[int | None]] | None] = (
            asyncio.Queue(config.queue_size)
        )
        self.stats = IngestStats()
        self.rejected: Counter[tuple[str, str]] = Counter()
        self.per_sensor: Counter[str] = Counter()
        self._last_cp_time = monotonic()
        self._stopping = False

    # --- Sink -----------------------------------------------------------------

    async def submit(self, reading: Reading) -> bool:
        return await self._submit(reading) is not None

    async def submit_gap(self, gap: Gap) -> None:
        await self._submit(gap)

    async def submit_event(self, event: Event) -> None:
        await self._submit(event)

    def reject(self, sensor: str, reason: str, detail: str) -> None:
        self.rejected[(sensor, reason)] += 1
        log.warning("sensor %s: rejected (%s): %s", sensor, reason, detail)

    async def _submit(self, item: LogItem) -> int | None:
        if self._stopping:
            raise GatewayError("the gateway is shutting down; reading not taken")
        fut: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, fut))
        return await fut

    # --- writer -----------------------------------------------------------------

    def _checkpoint_due(self, size: int) -> bool:
        new = size - self.log.checkpointed_size
        if new <= 0:
            return False
        if new >= self.config.checkpoint_every_entries:
            return True
        return self._monotonic() - self._last_cp_time >= self.config.checkpoint_every_seconds

    def _wait_timeout(self) -> float | None:
        if self.log.size <= self.log.checkpointed_size:
            return None
        elapsed = self._monotonic() - self._last_cp_time
        return max(0.0, self.config.checkpoint_every_seconds - elapsed)

    async def run(self) -> None:
        """Commit batches until ``close`` drains the queue."""
        while True:
            batch: list[tuple[LogItem, asyncio.Future[int | None]]] = []
            try:
                # asyncio.timeout, not wait_for (which can swallow a cancellation on 3.11).
                async with asyncio.timeout(self._wait_timeout()):
                    first = await self._queue.get()
            except TimeoutError:
                first = None
                if self._stopping:
                    return
            else:
                if first is None:  # close() sentinel: everything before it is queued
                    await self._write([], final=True)
                    return
                batch.append(first)
            while len(batch) < self.config.max_batch and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    await self._write(batch, final=True)
                    return
                batch.append(nxt)
            await self._write(batch)

    async def _write(
        self, batch: list[tuple[LogItem, asyncio.Future[int | None]]], *, final: bool = False
    ) -> None:
        items = [it for it, _ in batch]
        checkpoint = final or self._checkpoint_due(self.log.size + len(items))
        before = self.log.last_checkpoint
        try:
            results = await self.log.append(items, checkpoint=checkpoint)
        except GatewayError as exc:
            self.stats.failed_batches += 1
            log.exception("commit of %d items failed", len(items))
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        self.stats.batches += 1
        for (it, fut), res in zip(batch, results, strict=True):
            if res is None:
                self.stats.duplicates += 1
            else:
                self.stats.committed += 1
                if isinstance(it, Reading):
                    self.per_sensor[it.sensor] += 1
            if not fut.done():
                fut.set_result(res)
        cp = self.log.last_checkpoint
        if cp is not None and cp is not before:
            self.stats.checkpoints += 1
            self._last_cp_time = self._monotonic()
            if self._on_checkpoint is not None:
                self._on_checkpoint(cp)

    async def close(self) -> None:
        """Stop taking readings, commit what is queued, and sign a final checkpoint."""
        self._stopping = True
        await self._queue.put(None)
