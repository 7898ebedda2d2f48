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
is that rule, pure; ``plan`` reads its inputs from the store; ``prune`` applies it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ledger_client.tiles import TILE_WIDTH

from .store import Store

__all__ = [
    "EXPORTED_META",
    "PRUNED_META",
    "PUBLISHED_META",
    "Decision",
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


async def plan(store: Store, ledgers: Sequence[str], retain_days: int, now_ns: int) -> Decision:
    """``prunable_below`` for the log in ``store`` (retain_days 0: nothing is pruned)."""
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
        exported=exported,
    )


async def prune(store: Store, decision: Decision) -> int:
    """Prune the record bodies below ``decision.below`` not pruned yet; how many."""
    done = await _meta_int(store, PRUNED_META) or 0
    if decision.below <= done:
        return 0
    n = await store.prune_bodies(done, decision.below, {PRUNED_META: str(decision.below)})
    logger.info(
        "retention: record bodies of entries %d to %d pruned (%d rows; bound by %s)",
        done,
        decision.below - 1,
        n,
        decision.limit,
    )
    return n


async def record_copy(store: Store, key: str, size: int) -> None:
    """Raise the ``key`` mark (published or exported) to ``size``; never lower it."""
    if size > (await _meta_int(store, key) or 0):
        await store.set_meta(key, str(size))


async def _meta_int(store: Store, key: str) -> int | None:
    text = await store.get_meta(key)
    return int(text) if text is not None and text.isdigit() else None
