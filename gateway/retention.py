"""Retention: which old record bodies may go, and pruning them (docs/operations.md, "Retention").

A tiled log cannot drop entries: every checkpoint's root, every inclusion proof
and every hash tile depends on all the leaves. So retention removes only record
bodies (``entries.data``) and keeps each entry's row (index, kind, sensor, seq,
time) and every stored subtree hash: each checkpoint stays provable, and every
retained entry stays provable against every checkpoint.

Entries ``[0, P)`` may be pruned, P the least of: the first entry younger than
``retain_days``; per configured ledger, the size of its newest checkpoint
anchored ``final``; and the larger of the published position and the exported
high-water mark, so a regulator holds a copy of every pruned record. P is
rounded down to a whole entry bundle (``TILE_WIDTH`` entries). ``prunable_below``
is that rule, pure; ``plan`` reads its inputs from the store; ``prune`` applies it,
one entry bundle per transaction; ``Retention`` is the daemon's task that runs them
at its start and every ``EVERY_S`` on a connection of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger_client.records import format_time
from ledger_client.tiles import TILE_WIDTH

from .errors import GatewayError
from .store import Store

__all__ = [
    "EXPORTED_META",
    "PRUNED_META",
    "PUBLISHED_META",
    "Decision",
    "Retention",
    "plan",
    "prunable_below",
    "prune",
    "record_copy",
]

logger = logging.getLogger(__name__)

PUBLISHED_META = "published_size"
"""Meta key: the largest tree size ``gateway publish`` has completed to a target."""
EXPORTED_META = "exported_size"
"""Meta key: the largest tree size a ``gateway export`` of the whole log has written."""
PRUNED_META = "pruned_below"
"""Meta key: the record bodies of entries below this index are pruned."""
_DAY_NS = 86_400 * 10**9
EVERY_S = 3600.0
"""The daemon applies the rule at its start and then once an hour."""
RETRY_S = 60.0
"""After a pass that failed (e.g. the disk refused the write), the next one is this soon."""
STEP_PAUSE_S = 0.05
"""Between two prune steps: the ingest writer takes the write lock in between."""


@dataclass(frozen=True)
class Decision:
    """How far pruning may go, and which rule stops it there."""

    below: int
    """Entries ``[0, below)`` may have their record bodies pruned (a multiple of TILE_WIDTH)."""
    limit: str
    """What bounds it: ``age``, ``anchor:<ledger>``, ``copies``, ``newest`` (the newest
    entry's bundle is kept) or ``nothing configured``."""


def prunable_below(
    *,
    size: int,
    first_young: int | None,
    ledgers: Sequence[str],
    final: Mapping[str, int | None],
    published: int | None,
    exported: int | None,
) -> Decision:
    """The prune bound for a log of ``size`` entries.

    ``first_young`` is the index of the first entry younger than the retention age
    (None: every entry is older); ``final`` per ledger label the size of its newest
    checkpoint anchored final (None: none yet); ``ledgers`` the configured ones, each
    of which must have anchored final what is pruned (none configured: nothing is).
    """
    if not ledgers:
        return Decision(0, "nothing configured")
    bounds: list[tuple[int, str]] = [(size if first_young is None else first_young, "age")]
    bounds += [(final.get(name) or 0, f"anchor:{name}") for name in ledgers]
    bounds.append((max(published or 0, exported or 0), "copies"))
    # The entry bundle that holds the newest entry is always kept whole: the daemon's
    # start reads the newest entry, and a partial bundle is still growing.
    bounds.append((max(0, size - 1) // TILE_WIDTH * TILE_WIDTH, "newest"))
    below, limit = min(bounds, key=lambda b: b[0])
    return Decision(max(0, below) // TILE_WIDTH * TILE_WIDTH, limit)


async def plan(
    store: Store,
    ledgers: Sequence[str],
    retain_days: int,
    now_ns: int,
    *,
    mirror: bool = False,
) -> Decision:
    """``prunable_below`` for the log in ``store`` (retain_days 0: nothing is pruned).

    ``mirror``: an uplink keeps a mirror growing, so only what it holds may go (an
    export does not count): the uplink's next upload starts in the entry bundle
    holding its position, which must still be here.
    """
    if retain_days <= 0:
        return Decision(0, "nothing configured")
    cutoff = now_ns - retain_days * _DAY_NS
    final = {name: (await store.anchor_marks(name))[0] for name in ledgers}
    published, exported = (
        await _meta_int(store, PUBLISHED_META),
        await _meta_int(store, EXPORTED_META),
    )
    return prunable_below(
        size=await store.size(),
        first_young=await store.first_entry_at_or_after(cutoff),
        ledgers=ledgers,
        final=final,
        published=published,
        exported=None if mirror else exported,
    )


async def prune(
    store: Store,
    decision: Decision,
    *,
    pause_s: float = 0.0,
    on_step: Callable[[int, float], None] | None = None,
) -> int:
    """Prune the record bodies below ``decision.below`` not pruned yet; how many.

    One entry bundle per transaction, each raising ``pruned_below`` with it, with
    ``pause_s`` between them, so a writer on another connection waits at most one
    step for the write lock. ``on_step(below, seconds)`` hears how long each step
    took, waiting for the lock included.
    """
    done = first = await pruned_below(store)
    n = 0
    while done < decision.below:
        end = min(done + TILE_WIDTH, decision.below)
        t0 = time.perf_counter()
        n += await store.prune_bodies(done, end, {PRUNED_META: str(end)})
        if on_step is not None:
            on_step(end, time.perf_counter() - t0)
        done = end
        if done < decision.below:
            await asyncio.sleep(pause_s)
    if n or done > first:
        logger.info(
            "retention: record bodies of entries %d to %d pruned (%d rows; bound by %s)",
            first,
            done - 1,
            n,
            decision.limit,
        )
    return n


async def pruned_below(store: Store) -> int:
    """Entries below this index have lost their record bodies (0: none)."""
    return await _meta_int(store, PRUNED_META) or 0


async def record_copy(store: Store, key: str, size: int) -> None:
    """Raise the ``key`` mark (published or exported) to ``size``; never lower it."""
    if size > (await _meta_int(store, key) or 0):
        await store.set_meta(key, str(size))


async def _meta_int(store: Store, key: str) -> int | None:
    text = await store.get_meta(key)
    return int(text) if text is not None and text.isdigit() else None


class Retention:
    """The daemon's retention task: the rule applied at the start and every ``every_s``,
    on a connection of its own (SQLite's write lock orders its steps with the ingest
    writer's commits; one shared connection could interleave two transactions).

    ``to_json`` is its part of the status document (``retention``).
    """

    def __init__(
        self,
        db_path: Path,
        ledgers: Sequence[str],
        retain_days: int,
        *,
        mirror: bool = False,
        clock: Callable[[], int] = time.time_ns,
        every_s: float = EVERY_S,
        pause_s: float = STEP_PAUSE_S,
    ) -> None:
        self.db_path = db_path
        self.ledgers = tuple(ledgers)
        self.retain_days = retain_days
        self.mirror = mirror
        self.clock = clock
        self.every_s = every_s
        self.pause_s = pause_s
        self.retained_from: int | None = None
        """The first entry whose record body is kept (None: not read yet)."""
        self.decision: Decision | None = None
        self.last_run_ns: int | None = None
        self.next_run_ns: int | None = None
        self.last_pruned = 0
        """Record bodies the last pass removed."""
        self.longest_step_s = 0.0
        """The longest prune step since the start (holding the write lock, waiting for it)."""
        self.last_error: str | None = None
        self.passes = 0
        self._wake = asyncio.Event()

    def _step(self, below: int, seconds: float) -> None:
        self.retained_from = below
        self.longest_step_s = max(self.longest_step_s, seconds)

    async def step(self, store: Store) -> int:
        """One pass: plan, then prune; how many record bodies went."""
        self.retained_from = await pruned_below(store)
        self.decision = await plan(
            store, self.ledgers, self.retain_days, self.clock(), mirror=self.mirror
        )
        n = await prune(store, self.decision, pause_s=self.pause_s, on_step=self._step)
        self.retained_from = await pruned_below(store)
        return n

    async def run(self) -> None:
        """Pass after pass until cancelled; a failed pass (or open) is logged and retried:
        retention is never a reason for the daemon to stop."""
        store: Store | None = None
        async with contextlib.AsyncExitStack() as stack:
            while True:
                self.last_run_ns = self.clock()
                delay = self.every_s
                try:
                    if store is None:
                        store = await stack.enter_async_context(Store(self.db_path))
                    self.last_pruned = await self.step(store)
                    self.last_error = None
                except GatewayError as exc:
                    logger.warning("retention: pass failed, trying again: %s", exc)
                    self.last_error = str(exc)
                    delay = min(delay, RETRY_S)
                self.passes += 1
                self.next_run_ns = self.clock() + int(delay * 1e9)
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()

    def wake(self) -> None:
        """Run the next pass now (e.g. when an anchor turned final)."""
        self._wake.set()

    def to_json(self) -> dict[str, Any]:
        d = self.decision
        return {
            "retain_days": self.retain_days,
            "retained_from": self.retained_from,
            "prunable_below": d.below if d is not None else None,
            "limit": d.limit if d is not None else None,
            "last_run": format_time(self.last_run_ns) if self.last_run_ns else None,
            "next_run": format_time(self.next_run_ns) if self.next_run_ns else None,
            "last_pruned": self.last_pruned,
            "longest_step_ms": round(self.longest_step_s * 1000, 1),
            "last_error": self.last_error,
        }
