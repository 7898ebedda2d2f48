"""Export a version 2 bundle: the log's own tiles in a ustar container, streamed.

docs/bundle-format.md §14–§15 is the normative description. The bundle holds,
for one stretch ``[s, n)`` of the tree, the tlog-tiles files a reader needs to
recompute every checkpoint in it: the left-context hash tiles of ``s``, then
per level-0 tile either its entry bundle or (when entries are selected by
sensor) its hash tile and the selected entries. Members are written one tile
at a time to a temporary file beside the output, renamed into place at the
end, so memory does not grow with the log.

Which stretch (a = first and b = last index received in the time window):

- p, the checkpoint before: the largest checkpoint size ≤ a (if any);
- s = 256·⌊min(a, p)/256⌋, the tile holding the earlier of the two, and 0 for
  a whole-log export (no time window, no sensor);
- n = the smallest checkpoint size ≥ b + 1, so the last entry is covered;
- the manifest lists every checkpoint of size in [max(p, 1, s), n]: each is
  then a root of the one tree the reader rebuilds.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ledger_client.bundle import AnchorReceipt
from ledger_client.bundle_v2 import (
    CHECKPOINT_NAME,
    MANIFEST_NAME,
    SELECTED_PREFIX,
    Manifest,
    Selection,
    encode_selected,
)
from ledger_client.container import ContainerWriter
from ledger_client.records import format_time
from ledger_client.tiles import (
    ENTRIES,
    TILE_WIDTH,
    TileRef,
    encode_index,
    left_context,
)

from .export import _VERSION, ExportEmpty, device_keys, retained_span, written_whole
from .log import Log
from .retention import pruned_below

__all__ = ["BundleSummary", "Window", "export_bundle_v2", "plan_window", "write_bundle_v2"]


@dataclass(frozen=True)
class Window:
    """The stretch of the tree a bundle covers (module docstring): a, b, p, s, n."""

    first: int
    last: int
    previous: int | None
    start: int
    size: int

    @property
    def lowest_checkpoint(self) -> int:
        """The smallest checkpoint size the manifest may list."""
        return max(self.previous or 1, self.start, 1)

    def tiles(self) -> list[TileRef]:
        """Level-0 tiles from ``start`` to the one holding leaf ``size − 1``, at their widths."""
        n = self.size
        return [
            TileRef(0, t, min(TILE_WIDTH, n - t * TILE_WIDTH))
            for t in range(self.start // TILE_WIDTH, (n - 1) // TILE_WIDTH + 1)
        ]


MANIFEST_MAX_ANCHORED = 10_000
"""A manifest carries every anchored checkpoint up to this many; beyond, one per hour
(or per longer span, so that at most this many remain) — docs/bundle-format.md §15.2.
A checkpoint a minute would otherwise make a year's manifest hundreds of megabytes,
and an hour is as fine as a "recorded no later than" needs to be."""


def plan_window(
    first: int, last: int, sizes: Sequence[int], *, whole: bool, retained: int = 0
) -> Window:
    """The window for entries ``first``–``last`` given the ascending checkpoint ``sizes``.

    ``retained``: entries below it were pruned, so the window starts at or above it
    and a checkpoint before it cannot be recomputed (it is left out). ExportEmpty if
    no checkpoint covers ``last`` yet.
    """
    if not 0 <= first <= last:
        raise ValueError(f"entries {first}–{last} are not a range")
    at = bisect.bisect_right(sizes, first)
    previous = sizes[at - 1] if at and sizes[at - 1] >= retained else None
    start = 0 if whole else TILE_WIDTH * (min(first, previous or first) // TILE_WIDTH)
    at = bisect.bisect_left(sizes, last + 1)
    if at == len(sizes):
        raise ExportEmpty(f"no checkpoint covers entry {last} yet")
    return Window(first, last, previous, start, sizes[at])


@dataclass(frozen=True)
class BundleSummary:
    """What an export wrote: ``entries`` carried in full (selected ones with ``--sensor``)."""

    path: Path | None
    bytes: int
    entries: int
    window: Window
    checkpoints: int
    anchors: int
    tiles: int


async def write_bundle_v2(
    log: Log,
    out: BinaryIO,
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    sensors: Collection[str] | None = None,
    seal: bool = True,
    clock: Callable[[], int] = time.time_ns,
) -> BundleSummary:
    """Write a v2 bundle to ``out`` (a binary stream) and say what it holds.

    On an error (e.g. ExportEmpty for a sensor with nothing in the window,
    found only as the tiles stream by) part of a bundle may have been
    written: ``export_bundle_v2`` writes to a file it then discards.

    ``since_ns``/``until_ns`` choose entries by receive time, as version 1
    does; ``sensors`` (None or empty: all) carries in full only the entries
    of those sensors, beside the hash tiles of every entry. With none of the
    three the whole log is exported. With ``seal``, a checkpoint of every
    committed entry is signed first.
    """
    store = log.store
    if seal:
        await log.checkpoint()
    chosen = tuple(sorted(set(sensors))) if sensors else None
    span = await store.index_range(since_ns, until_ns)
    if span is None:
        raise ExportEmpty("no entries in the requested time window")
    span = await retained_span(log, span, since_ns)
    kept = await pruned_below(store)
    # After pruning, "the whole log" is a range from the first retained entry.
    whole = since_ns is None and until_ns is None and chosen is None and not kept
    below, _ = await store.checkpoint_sizes_around(span[0])
    _, above = await store.checkpoint_sizes_around(span[1] + 1)
    window = plan_window(
        *span, [s for s in (below, above) if s is not None], whole=whole, retained=kept
    )
    cps, anchor_rows = await store.anchored_checkpoints(
        window.lowest_checkpoint,
        window.size,
        at_most=MANIFEST_MAX_ANCHORED,
        always=[s for s in (window.previous, window.size) if s is not None],
    )
    anchors = tuple(
        AnchorReceipt(a.checkpoint, a.backend, a.digest, a.state, json.loads(a.receipt))
        for a in anchor_rows
    )
    keys = await device_keys(log)
    exported_ns = clock()
    selection = None
    if not whole:
        selection = Selection(
            first=window.first,
            last=window.last,
            since=None if since_ns is None else format_time(since_ns),
            until=None if until_ns is None else format_time(until_ns),
            sensors=chosen,
        )
    manifest = Manifest(
        origin=log.key.origin,
        device=log.key.device_id,
        keys=keys,
        checkpoints=tuple(c.note for c in cps),
        anchors=anchors,
        start=window.start,
        selection=selection,
        exported=format_time(exported_ns),
        exporter=_VERSION,
    )

    writer = ContainerWriter(out, mtime=exported_ns // 1_000_000_000)
    writer.add(MANIFEST_NAME, manifest.dumps())
    writer.add(CHECKPOINT_NAME, cps[-1].note.encode("utf-8"))
    tiles = 0
    for ref in left_context(window.start, window.size):
        writer.add(ref.path, await store.tile(ref.level, ref.index, ref.width))
        tiles += 1
    carried = in_window = 0
    for ref in window.tiles():
        if chosen is None:
            writer.add(
                TileRef(ENTRIES, ref.index, ref.width).path,
                await store.entry_bundle(ref.index, ref.width),
            )
            carried += ref.width
            continue
        writer.add(ref.path, await store.tile(ref.level, ref.index, ref.width))
        tiles += 1
        base = ref.index * TILE_WIDTH
        picked: list[tuple[int, bytes]] = []
        async for row in store.entries(base, base + ref.width - 1):
            if row.sensor in chosen:
                picked.append((row.index - base, row.data))
                in_window += window.first <= row.index <= window.last
        if picked:
            writer.add(SELECTED_PREFIX + encode_index(ref.index), encode_selected(picked))
            carried += len(picked)
    if chosen is not None and not in_window:
        raise ExportEmpty(
            f"no entries of sensor(s) {', '.join(chosen)} in the requested time window"
        )
    writer.close()
    return BundleSummary(
        path=None,
        bytes=writer.bytes_written,
        entries=carried,
        window=window,
        checkpoints=len(cps),
        anchors=len(anchors),
        tiles=tiles,
    )


async def export_bundle_v2(
    log: Log,
    path: Path,
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    sensors: Collection[str] | None = None,
    seal: bool = True,
    clock: Callable[[], int] = time.time_ns,
) -> BundleSummary:
    """``write_bundle_v2`` to ``path``: written to ``<path>.tmp`` beside it, synced, renamed.

    On any failure the temporary file is removed and ``path`` is untouched.
    """
    with written_whole(path) as f:
        summary = await write_bundle_v2(
            log,
            f,
            since_ns=since_ns,
            until_ns=until_ns,
            sensors=sensors,
            seal=seal,
            clock=clock,
        )
    return dataclasses.replace(summary, path=path)
