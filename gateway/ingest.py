"""Group commit: many sources submit, one writer commits them in batches.

Each ``submit`` waits until its reading is committed (that is when the source
may acknowledge it). The writer drains whatever is queued, up to
``max_batch``, into one transaction, so the cost of an fsync is shared by
every reading that arrived while the previous one ran. The writer also
decides when a checkpoint is due (every N entries or T seconds).

When load is light, that alone gives one commit (and one fsync, and every
B-tree page it dirties written again to the WAL) per reading. So a batch
smaller than ``GATHER_TARGET`` waits for more, and is committed at the first of:

- it holds ``GATHER_TARGET`` items (or ``max_batch``, if smaller);
- ``commit_window_s`` has passed since its first item arrived — the most a
  reading's commit (and its acknowledgement) is delayed by gathering;
- the stream has paused: nothing arrived for ``PAUSE_GAPS`` times the usual
  gap between arrivals (a moving average, at least ``PAUSE_MIN_S``). A source
  that may have only N messages unacknowledged at once (Mosquitto's
  ``max_inflight_messages``) stops sending after N until they are committed;
  without this rule it would wait a whole window every N messages;
- it holds an event (``boot``, ``stop``, ``config``, ``clock-step``): events are
  rare, and the daemon waits for its boot event before it starts the sources;
- a checkpoint falls due (``checkpoint_every_seconds`` since the last one);
- one of its readings has been held its sensor's hold limit (the daemon gives
  half the sensor's ``interval_s``): a serial driver polls its next slot only
  once its reading is committed, so holding it longer would make it miss slots.

The usual gap is measured from the later of the previous arrival and the last
commit, so a source that waits for each commit before it sends again is seen
as the quick stream it is, not as one as slow as the window it waited through.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeAlias

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

GATHER_TARGET = 32
"""A batch this large commits at once: a commit's fixed cost (about 1 ms of CPU, an
fsync and some 16 KB written: the B-tree pages every commit touches) is then a
small share of each reading's, and at 1,000 readings/s the wait for it is about
32 ms. At 10 readings/s the window (2 s) comes first: 20 readings a commit."""

PAUSE_GAPS = 8.0
"""The stream has paused when nothing arrived for this many usual gaps between arrivals..."""

PAUSE_MIN_S = 0.002
"""...or for this long, whichever is longer (timer and scheduling noise)."""

_Queued: TypeAlias = tuple[LogItem, asyncio.Future[int | None], float]
"""An item, the future its submitter waits on, and its arrival (the monotonic clock)."""


@dataclass
class IngestStats:
    committed: int = 0
    duplicates: int = 0
    batches: int = 0
    failed_batches: int = 0
    checkpoints: int = 0
    window_expired: int = 0
    """Commits whose batch waited the whole ``commit_window_s`` (light load)."""


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
        hold_limits: Mapping[str, float] | None = None,
    ) -> None:
        self.log = log_
        self._hold_limits = dict(hold_limits or {})
        """Per sensor, the most one of its readings is held for a batch (under the window)."""
        self.storage = storage
        """Asked before each commit; while it refuses, batches are refused unwritten."""
        self.config = config
        self.silence = silence
        self._on_checkpoint = on_checkpoint
        self._monotonic = monotonic
        self._queue: asyncio.Queue[_Queued | None] = asyncio.Queue(config.queue_size)
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
        self._last_arrival: float | None = None
        self._last_commit: float | None = None
        self._usual_gap: float | None = None
        """Moving average of the time between arrivals (seconds)."""

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
        await self._queue.put((item, fut, self._arrived()))
        return await fut

    def _arrived(self) -> float:
        """Note an arrival for the pause rule; its time."""
        now = self._monotonic()
        # From the later of the last arrival and the last commit: a source that sends
        # its next reading only once the previous one is committed must not make the
        # usual gap as long as the gathering it waited through.
        since = max(self._last_arrival or 0.0, self._last_commit or 0.0)
        if self._last_arrival is not None:
            gap = max(0.0, now - since)
            old = self._usual_gap
            self._usual_gap = gap if old is None else old + (gap - old) / 8
        self._last_arrival = now
        return now

    def _enqueue_detached(self, gap: Gap | Event) -> None:
        """Queue a gap (or a ``clock-step`` event) nobody waits for, ahead of what is
        submitted after it."""
        about = f"sensor {gap.sensor}: gap" if isinstance(gap, Gap) else f"{gap.name} event"
        if self._stopping:
            logger.warning("%s record not taken while shutting down", about)
            return
        fut: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_log_lost_gap)
        queued = (gap, fut, self._arrived())
        try:
            self._queue.put_nowait(queued)
        except asyncio.QueueFull:
            # Back-pressure: the queue is full of readings; the gap goes in when there is room.
            task = asyncio.get_running_loop().create_task(
                self._queue.put(queued), name=f"gateway.ingest.detached[{about}]"
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
            batch: list[_Queued] = []
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
            final = self._take_queued(batch)
            if batch and not final and not _has_event(batch):
                final = await self._gather(batch)
            await self._write(batch, final=final)
            if final:
                return

    def _take_queued(self, batch: list[_Queued]) -> bool:
        """Move what is queued into ``batch`` (up to ``max_batch``); True at the sentinel."""
        while len(batch) < self.config.max_batch and not self._queue.empty():
            nxt = self._queue.get_nowait()
            if nxt is None:
                return True
            batch.append(nxt)
        return False

    async def _gather(self, batch: list[_Queued]) -> bool:
        """Wait for more while the rule of the module docstring says so; True at the sentinel."""
        window = self.config.commit_window_s
        target = min(GATHER_TARGET, self.config.max_batch)
        # Never past a due checkpoint: what gathers goes into it, so a live uplink
        # publishes a reading within one checkpoint interval.
        due = self._last_cp_time + self.config.checkpoint_every_seconds
        deadline = min(due, *(self._hold_deadline(q, window) for q in batch))
        while len(batch) < target and not self._stopping:
            now = self._monotonic()
            last = self._last_arrival if self._last_arrival is not None else now
            until = min(deadline, last + self._pause(window))
            if now >= until:
                if now >= deadline:
                    self.stats.window_expired += 1
                return False
            try:
                async with asyncio.timeout(until - now):
                    nxt = await self._queue.get()
            except TimeoutError:
                continue  # look again: an arrival may have moved the pause on
            if nxt is None:
                return True
            seen = len(batch)
            batch.append(nxt)
            if self._take_queued(batch):
                return True
            new = batch[seen:]  # only what just came can bring the deadline closer
            deadline = min(deadline, *(self._hold_deadline(q, window) for q in new))
            if _has_event(new):
                return False
        return False

    def _hold_deadline(self, queued: _Queued, window: float) -> float:
        item, _, arrived = queued
        if isinstance(item, Reading):
            return arrived + min(window, self._hold_limits.get(item.sensor, window))
        return arrived + window

    def _pause(self, window: float) -> float:
        if self._usual_gap is None:  # one arrival ever: no rate known yet
            return window
        return min(window, max(PAUSE_MIN_S, PAUSE_GAPS * self._usual_gap))

    async def _write(self, batch: list[_Queued], *, final: bool = False) -> None:
        items = [it for it, _, _ in batch]
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
            for _, fut, _ in batch:
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
            ((item, fut, _),) = batch
            logger.exception("an item could not be logged and was refused: %r", item)
            if not fut.done():
                fut.set_exception(GatewayError(f"the log refused the item: {exc}"))
            if final:
                await self._write([], final=True)
            return
        self.stats.batches += 1
        self._last_commit = self._monotonic()
        for (it, fut, _), res in zip(batch, results, strict=True):
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

    async def _storage_ready(self, batch: list[_Queued]) -> bool:
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

    def _refuse(self, batch: list[_Queued], exc: StorageRefused) -> None:
        """Nothing of ``batch`` was written: no submitter is told it was (no acknowledgement)."""
        self.stats.failed_batches += 1
        if self.storage is not None:
            self.storage.failed(exc)
        for item, fut, _ in batch:
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


def _has_event(batch: list[_Queued]) -> bool:
    """An event (boot, stop, config, clock-step) is rare and what comes next may wait on it:
    the batch holding it is committed without gathering."""
    return any(isinstance(item, Event) for item, _, _ in batch)
