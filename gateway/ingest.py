"""Group commit: many sources submit, one writer commits them in batches.

Each ``submit`` waits until its reading is committed (that is when the source
may acknowledge it). The writer drains whatever is queued, up to
``max_batch``, into one transaction, so the cost of an fsync is shared by
every reading that arrived while the previous one ran. The writer also
decides when a checkpoint is due (every N entries or T seconds).

Being the one Sink of every driver, it is also where silence is noticed: each
reading that arrives and each refusal (``reject``) is told to the silence
tracker (gateway/silence.py), and a gap that closes a silence is queued just
before the reading that ended it. A reading whose dedup key was committed
recently (an MQTT redelivery) is not news of the sensor: it is not told to the
tracker, which would otherwise take a copy of an old reading, arriving during a
silence, for the sensor speaking (and let the log's silence grow past its
allowance with no gap record: docs/bundle-format.md §9 8 f).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from .config import LogConfig
from .errors import GatewayError, StorageRefused
from .log import Log, LogItem
from .pipeline import Event, Gap, Reading, Value
from .silence import SilenceTracker
from .storage import STORAGE_FULL, StorageGuard
from .store import CheckpointRow

__all__ = ["RECENT_KEYS", "Ingest", "IngestStats"]

logger = logging.getLogger(__name__)

RECENT_KEYS = 256
"""Per sensor, how many committed dedup keys are remembered to recognise a redelivery."""


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
        silence: SilenceTracker | None = None,
        storage: StorageGuard | None = None,
    ) -> None:
        self.log = log_
        self.storage = storage
        """Asked before each commit; while it refuses, batches are refused unwritten."""
        self.config = config
        self.silence = silence
        self._on_checkpoint = on_checkpoint
        self._monotonic = monotonic
        self._queue: asyncio.Queue[tuple[LogItem, asyncio.Future[int | None]] | None] = (
            asyncio.Queue(config.queue_size)
        )
        self.stats = IngestStats()
        self.rejected: Counter[tuple[str, str]] = Counter()
        self.per_sensor: Counter[str] = Counter()
        self._waiting_gaps: set[asyncio.Task[None]] = set()
        self._recent_keys: dict[str, dict[str, None]] = {}
        """Per sensor, the dedup keys of its last RECENT_KEYS committed readings, in order."""
        self.last_reading_ns: dict[str, int] = {}
        """Per sensor, the receive time of its last committed reading."""
        self.last_values: dict[str, tuple[Value, ...]] = {}
        """Per sensor, the values of its last committed reading (for status)."""
        self.last_reject: dict[str, tuple[str, str, int]] = {}
        """Per sensor, its latest refusal: (reason, detail, time in ns), for status."""
        self._last_cp_time = monotonic()
        self._stopping = False

    # --- Sink -----------------------------------------------------------------

    async def submit(self, reading: Reading) -> bool:
        key = reading.dedup_key
        recent = self._recent_keys.get(reading.sensor)
        known = key is not None and recent is not None and key in recent
        if self.silence is not None and not known:
            for gap in self.silence.reading(reading.sensor, reading.received_ns):
                self._enqueue_detached(gap)
        index = await self._submit(reading)
        if index is not None and key is not None:
            keys = self._recent_keys.setdefault(reading.sensor, {})
            keys[key] = None
            if len(keys) > RECENT_KEYS:
                del keys[next(iter(keys))]
        return index is not None

    async def submit_gap(self, gap: Gap) -> None:
        await self._submit(gap)

    async def submit_event(self, event: Event) -> None:
        await self._submit(event)

    def reject(self, sensor: str, reason: str, detail: str) -> None:
        self.rejected[(sensor, reason)] += 1
        self.last_reject[sensor] = (reason, detail, time.time_ns())
        if self.silence is not None:
            self.silence.reject(sensor, reason)
        logger.warning("sensor %s: rejected (%s): %s", sensor, reason, detail)

    async def _submit(self, item: LogItem) -> int | None:
        if self._stopping:
            raise GatewayError("the gateway is shutting down; reading not taken")
        fut: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, fut))
        return await fut

    def _enqueue_detached(self, gap: Gap | Event) -> None:
        """Queue a gap (or a ``clock-step`` event) nobody waits for, ahead of what is
        submitted after it."""
        about = f"sensor {gap.sensor}: gap" if isinstance(gap, Gap) else f"{gap.name} event"
        if self._stopping:
            logger.warning("%s record not taken while shutting down", about)
            return
        fut: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_log_lost_gap)
        try:
            self._queue.put_nowait((gap, fut))
        except asyncio.QueueFull:
            # Back-pressure: the queue is full of readings; the gap goes in when there is room.
            task = asyncio.get_running_loop().create_task(
                self._queue.put((gap, fut)), name=f"gateway.ingest.detached[{about}]"
            )
            self._waiting_gaps.add(task)  # the loop keeps only weak references
            task.add_done_callback(self._waiting_gaps.discard)

    # --- writer -----------------------------------------------------------------

    def _checkpoint_due(self, size: int) -> bool:
        new = size - self.log.checkpointed_size
        if new <= 0:
            return False
        if new >= self.config.checkpoint_every_entries:
            return True
        return self._monotonic() - self._last_cp_time >= self.config.checkpoint_every_seconds

    def _wait_timeout(self) -> float | None:
        retry = self.storage.retry_in() if self.storage is not None else None
        if retry is not None:
            return retry  # wake to try the storage again, even with nothing queued
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
        if self.storage is not None and not await self._storage_ready(batch):
            return
        checkpoint = final or self._checkpoint_due(self.log.size + len(items))
        before = self.log.last_checkpoint
        try:
            results = await self.log.append(items, checkpoint=checkpoint)
        except StorageRefused as exc:
            self._refuse(batch, exc)
            return
        except GatewayError as exc:
            self.stats.failed_batches += 1
            logger.exception("commit of %d items failed", len(items))
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        except Exception as exc:  # an item the log cannot encode: find it, keep the rest
            if not batch:
                raise
            if len(batch) > 1:
                for i, one in enumerate(batch):
                    await self._write([one], final=final and i == len(batch) - 1)
                return
            self.stats.failed_batches += 1
            ((item, fut),) = batch
            logger.exception("an item could not be logged and was refused: %r", item)
            if not fut.done():
                fut.set_exception(GatewayError(f"the log refused the item: {exc}"))
            if final:
                await self._write([], final=True)
            return
        self.stats.batches += 1
        for (it, fut), res in zip(batch, results, strict=True):
            if res is None:
                self.stats.duplicates += 1
            else:
                self.stats.committed += 1
                if isinstance(it, Reading):
                    self.per_sensor[it.sensor] += 1
                    self.last_reading_ns[it.sensor] = it.received_ns
                    self.last_values[it.sensor] = it.values
            if not fut.done():
                fut.set_result(res)
        cp = self.log.last_checkpoint
        if cp is not None and cp is not before:
            self.stats.checkpoints += 1
            self._last_cp_time = self._monotonic()
            if self._on_checkpoint is not None:
                self._on_checkpoint(cp)

    async def _storage_ready(self, batch: list[tuple[LogItem, asyncio.Future[int | None]]]) -> bool:
        """False, the batch refused unwritten, while the data directory cannot take it.

        The first write after a refusal is the ``storage-full`` gaps: per sensor
        whose readings were refused or that is watched, from the instant its
        records last cover to now, ahead of any reading taken after them.
        """
        assert self.storage is not None
        storage = self.storage
        try:
            try:
                storage.before_commit()
            except StorageRefused:
                if storage.refusing or not storage.wal_bytes():
                    raise
                await self.log.store.truncate_wal()  # the WAL counts; a checkpoint frees it
                storage.before_commit()
            if storage.gaps_owed:
                now = time.time_ns()
                gaps: list[LogItem] = []
                for sensor in sorted(storage.refused_sensors | storage.watched):
                    covered = await self.log.store.covered_until(sensor)
                    since = covered if covered is not None else storage.since_ns or now
                    if since < now:
                        gaps.append(Gap(sensor, STORAGE_FULL, since, now))
                if gaps:
                    await self.log.append(gaps)
                storage.resumed()
        except StorageRefused as exc:
            self._refuse(batch, exc)
            return False
        return True

    def _refuse(
        self, batch: list[tuple[LogItem, asyncio.Future[int | None]]], exc: StorageRefused
    ) -> None:
        """Nothing of ``batch`` was written: no submitter is told it was (no acknowledgement)."""
        self.stats.failed_batches += 1
        if self.storage is not None:
            self.storage.failed(exc)
        for item, fut in batch:
            if isinstance(item, Reading):
                self.rejected[(item.sensor, STORAGE_FULL)] += 1
                if self.storage is not None:
                    self.storage.refused_reading(item.sensor)
            if not fut.done():
                fut.set_exception(exc)

    async def close(self) -> None:
        """Stop taking readings, commit what is queued, and sign a final checkpoint."""
        self._stopping = True
        await self._queue.put(None)


def _log_lost_gap(fut: asyncio.Future[int | None]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        logger.error("a gap record could not be committed: %s", fut.exception())
