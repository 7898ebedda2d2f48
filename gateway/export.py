"""Export a bundle: a contiguous range of entries with every proof a regulator needs.

Entries are chosen by receive time, then widened to the contiguous index
range between the first and last match (a bundle never has holes). Each
entry is proven against the first checkpoint that covers it; consecutive
checkpoints are linked by consistency proofs; the checkpoint just before the
range is included too, so a regulator can link this bundle to the last one.
If the newest entries are not covered by any checkpoint yet, one is signed
first (``seal``), so nothing in the range is left unproven.

The version 1 document (docs/bundle-format.md §2) is written as a stream:
everything but the entries first, then one entry at a time as it is read from
the log, byte for byte what ``Bundle.dumps`` writes. The proofs come from the
hashes of the range's trees held compactly: the leaf hashes of ``[s, n)`` (s
the level-0 tile boundary at or below the first entry, n the largest
checkpoint in the bundle), read one hash tile at a time, and every perfect
subtree above them, built bottom-up: 32 bytes a leaf and about as much again
for the levels above. The few subtrees that reach left of s come from the
store. Memory grows with those arrays, about 64 bytes an entry, never with the
entries or their proofs (1,000,000 entries: about 100 MiB in all).
"""

from __future__ import annotations

import binascii
import bisect
import contextlib
import dataclasses
import hashlib
import io
import itertools
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring
from pathlib import Path
from typing import BinaryIO

from ledger_client import merkle
from ledger_client.bundle import AnchorReceipt, Bundle, ConsistencyProof, DeviceKey
from ledger_client.merkle import Node
from ledger_client.records import format_time
from ledger_client.tiles import TILE_HEIGHT, TILE_WIDTH

from .errors import GatewayError
from .log import Log
from .retention import pruned_below
from .store import CheckpointRow

__all__ = [
    "ExportEmpty",
    "ExportPruned",
    "V1Summary",
    "device_keys",
    "export_bundle",
    "export_bundle_v1",
    "retained_span",
    "write_bundle_v1",
    "written_whole",
]

_VERSION = "riverseal 0.1.0"

_HASH = merkle.HASH_SIZE
_ENTRIES_MEMBER = ' "entries": []\n}\n'
"""How ``Bundle.dumps`` ends a bundle without entries; the stream writes them in its place."""
_WRITE_EVERY = 512
"""Entries gathered before one write to the output."""


class ExportEmpty(GatewayError):
    """No entries in the requested time window."""

    hint = "widen --since/--until, or check that the gateway is logging (gateway status)"


class ExportPruned(GatewayError):
    """The requested entries' record bodies were pruned by retention."""

    hint = (
        "export from the first retained entry on (--since its time), or take the older "
        "entries from the published mirror and the bundles exported before "
        "(docs/operations.md, Retention)"
    )


async def retained_span(log: Log, span: tuple[int, int], since_ns: int | None) -> tuple[int, int]:
    """``span`` (first, last index) within the retained part of the log.

    Without ``since`` the start is the first entry retention kept; an explicit
    request reaching below it is refused (ExportPruned), naming that entry.
    """
    kept = await pruned_below(log.store)
    first, last = span
    if first >= kept:
        return span
    if since_ns is None and last >= kept:
        return kept, last
    rec = await log.store.record(kept)
    when = f", received {rec['time']}" if rec is not None else ""
    raise ExportPruned(
        f"entries {first}–{last} were asked for, but retention pruned the record bodies "
        f"of entries 0–{kept - 1}: the first retained entry is {kept}{when}"
    )


@dataclass(frozen=True)
class V1Summary:
    """What a version 1 export wrote: entries ``first``–``last`` and the proofs of them."""

    path: Path | None
    bytes: int
    entries: int
    first: int
    last: int
    checkpoints: int
    anchors: int


async def device_keys(log: Log) -> tuple[DeviceKey, ...]:
    """The ``keys`` of a bundle (docs/bundle-format.md §3): every key of the log's
    history, oldest first, with its window.

    The first key's window starts at the log's creation, as bundles of a box
    that never rotated have always said; the window of a rotated-out key ends
    at its ``key-rotation`` event, and the next starts a microsecond later.
    """
    created = await log.store.get_meta("created")
    return tuple(
        DeviceKey(
            k.vkey,
            created if i == 0 and k.valid_from is None else k.valid_from,
            k.valid_until,
        )
        for i, k in enumerate(await log.key_history())
    )


async def _select(
    log: Log, since_ns: int | None, until_ns: int | None, seal: bool
) -> tuple[int, int, list[CheckpointRow]]:
    """First and last index of the bundle, and its checkpoints (the one before it first)."""
    store = log.store
    if seal:
        await log.checkpoint()
    span = await store.index_range(since_ns, until_ns)
    if span is None:
        raise ExportEmpty("no entries in the requested time window")
    first, last = await retained_span(log, span, since_ns)
    all_cps = await store.checkpoints()
    sizes = [c.size for c in all_cps]
    # The checkpoints that cover the range, plus the one just before it.
    lo = bisect.bisect_right(sizes, first)  # first checkpoint with size > first
    hi = bisect.bisect_right(sizes, last)  # first checkpoint with size > last
    if hi == len(sizes):
        last = sizes[-1] - 1 if sizes else -1
        if last < first:
            raise ExportEmpty("no checkpoint covers the requested entries yet")
        hi = bisect.bisect_right(sizes, last)
    return first, last, all_cps[max(lo - 1, 0) : hi + 1]


class _Subtrees:
    """Perfect subtree hashes over leaves ``[start, end)``, level by level, plus a few others.

    Level ``l`` is one bytearray of the 32-byte hashes of the subtrees
    ``(l, k)`` wholly inside ``[start, end)``, k ascending: the leaves, then
    each level folded from the one below, so all levels together take about
    twice the leaves' bytes. ``outside`` holds the subtrees that reach left of
    ``start`` that proofs will ask for.
    """

    def __init__(self, start: int, leaves: bytearray, outside: Mapping[Node, bytes]) -> None:
        self.start = start
        self.end = start + len(leaves) // _HASH
        self._levels: list[bytearray] = [leaves]
        self._firsts: list[int] = [start]
        self._outside = dict(outside)
        prefix = hashlib.sha256(b"\x01")
        level = 1
        while True:
            lo, hi = -(-start >> level), self.end >> level
            if hi <= lo:
                break
            below = memoryview(self._levels[-1])
            at = (2 * lo - self._firsts[-1]) * _HASH
            hashes = bytearray()
            for _ in range(hi - lo):
                h = prefix.copy()
                h.update(below[at : at + 2 * _HASH])
                hashes += h.digest()
                at += 2 * _HASH
            self._levels.append(hashes)
            self._firsts.append(lo)
            level += 1

    def hash(self, level: int, index: int) -> bytes:
        if level < len(self._levels):
            i = index - self._firsts[level]
            if i >= 0 and (index + 1) << level <= self.end:
                return bytes(self._levels[level][i * _HASH : (i + 1) * _HASH])
        try:
            return self._outside[Node(level, index)]
        except KeyError:
            raise GatewayError(
                f"export: subtree {Node(level, index)} is neither in the range's trees "
                f"[{self.start}, {self.end}) nor among those fetched left of it"
            ) from None

    def quoted_run(self, level: int, index: int, count: int) -> list[str]:
        """``_quote`` of the ``count`` subtrees of ``level`` from ``index`` on, all held."""
        if not (index >= self._firsts[level] and (index + count) << level <= self.end):
            raise GatewayError(f"export: subtrees {Node(level, index)} +{count} are not held")
        hashes = memoryview(self._levels[level])
        at = (index - self._firsts[level]) * _HASH
        return [_quote(hashes[o : o + _HASH]) for o in range(at, at + count * _HASH, _HASH)]

    def fold(self, nodes: Iterable[Node]) -> bytes:
        return merkle.fold([self.hash(level, index) for level, index in nodes])


def _outside_nodes(start: int, end: int) -> set[Node]:
    """Every perfect subtree an inclusion proof of an index ≥ start in a tree ≤ end can
    take that reaches left of ``start``.

    Such a subtree is the left sibling ``(l, (i >> l) - 1)`` of an ancestor of
    the leaf i ≥ start, so its index is ``(start >> l) - 1`` or ``start >> l``:
    at most two a level.
    """
    out: set[Node] = set()
    for level in range(end.bit_length()):
        for j in ((start >> level) - 1, start >> level):
            if j >= 0 and j << level < start and (j + 1) << level <= end:
                out.add(Node(level, j))
    return out


def _quote(h: bytes | memoryview) -> str:
    """A hash as the JSON string of its base64."""
    return '"' + binascii.b2a_base64(h, newline=False).decode("ascii") + '"'


class _InclusionProofs:
    """Inclusion proofs (RFC 9162 §2.1.3.1) as the JSON strings of their base64 hashes.

    The proof of leaf i in a tree of size n, with ``inner`` the bit length of
    ``i ^ (n - 1)``, has one hash a level, leaf side first: below
    ``inner - 1`` the sibling ``(l, (i >> l) ^ 1)``; at ``inner - 1`` the
    subtree right of i's ancestor, ``[r, n)``, which may be imperfect; above,
    for each set bit l of i, the left sibling ``(l, (i >> l) - 1)``
    (``merkle.inclusion_plan`` in closed form). Everything from level 8 up
    depends only on ``i >> 8`` and n, so it is worked out once per 256 leaves.
    Below, unless the tree ends in i's tile, it is the 8 siblings inside the
    tile, whose 511 subtrees are encoded once per tile.
    """

    def __init__(self, trees: _Subtrees) -> None:
        self._trees = trees
        self._at = [-1] * 64  # per level: the index of the subtree last quoted …
        self._quoted = [""] * 64  # … and its quoted base64
        self._tail_key = (-1, -1)
        self._tail: list[str] = []
        self._right: dict[tuple[int, int], str] = {}
        self._tile = -1
        self._in_tile: list[list[str]] = []  # per level below 8: the tile's subtrees, quoted

    def _node(self, level: int, index: int) -> str:
        if self._at[level] != index:
            self._at[level] = index
            self._quoted[level] = _quote(self._trees.hash(level, index))
        return self._quoted[level]

    def _levels(self, i: int, size: int, lo: int, hi: int) -> list[str]:
        """The proof's hashes of levels ``lo`` to ``hi - 1``."""
        out: list[str] = []
        inner = (i ^ (size - 1)).bit_length()
        for level in range(lo, min(inner - 1, hi)):
            out.append(self._node(level, (i >> level) ^ 1))
        level = inner - 1
        if inner and lo <= level < hi:
            r = ((i >> level) + 1) << level
            if size - r == 1 << level:
                out.append(self._node(level, (i >> level) + 1))
            else:
                quoted = self._right.get((r, size))
                if quoted is None:
                    if len(self._right) > 4096:
                        self._right.clear()
                    quoted = _quote(self._trees.fold(merkle.subtree_nodes(r, size)))
                    self._right[(r, size)] = quoted
                out.append(quoted)
        level = max(inner, lo)
        high = i >> level
        while high and level < hi:
            if high & 1:
                out.append(self._node(level, (i >> level) - 1))
            high >>= 1
            level += 1
        return out

    def proof(self, i: int, size: int) -> list[str]:
        """Leaf ``i``'s proof in the tree of ``size``: quoted base64 hashes, leaf side first."""
        key = (i >> TILE_HEIGHT, size)
        if key != self._tail_key:
            self._tail_key = key
            self._tail = self._levels(i, size, TILE_HEIGHT, 64)
        if not (i ^ (size - 1)) >> TILE_HEIGHT:  # the tree ends in i's tile
            return self._levels(i, size, 0, TILE_HEIGHT) + self._tail
        # The usual leaf: its tile is whole in the tree, the 8 siblings below are inside it
        # (TILE_HEIGHT is 8 by the tlog-tiles format: one list of quoted hashes a level).
        tile = i >> TILE_HEIGHT
        if tile != self._tile:
            self._tile = tile
            self._in_tile = [
                self._trees.quoted_run(level, tile << (TILE_HEIGHT - level), TILE_WIDTH >> level)
                for level in range(TILE_HEIGHT)
            ]
        q, j = self._in_tile, i & (TILE_WIDTH - 1)
        return [
            q[0][j ^ 1],
            q[1][(j >> 1) ^ 1],
            q[2][(j >> 2) ^ 1],
            q[3][(j >> 3) ^ 1],
            q[4][(j >> 4) ^ 1],
            q[5][(j >> 5) ^ 1],
            q[6][(j >> 6) ^ 1],
            q[7][(j >> 7) ^ 1],
            *self._tail,
        ]


def _entry_text(index: int, data: bytes, size: int, proof: list[str]) -> str:
    """One element of ``entries`` as ``Bundle.dumps`` writes it (indent 1, two deep)."""
    inclusion = "[\n    " + ",\n    ".join(proof) + "\n   ]" if proof else "[]"
    return (
        f'  {{\n   "index": {index},\n   "entry": {encode_basestring(data.decode("utf-8"))},'
        f'\n   "checkpoint": {size},\n   "inclusion": {inclusion}\n  }}'
    )


async def write_bundle_v1(
    log: Log,
    out: BinaryIO,
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    seal: bool = True,
    clock: Callable[[], int] = time.time_ns,
) -> V1Summary:
    """Write a version 1 bundle to ``out`` (a binary stream), an entry at a time.

    The bytes are exactly ``Bundle.dumps`` of the same bundle. Memory holds
    the hashes of the range's trees (about 64 bytes an entry), not the
    entries. On an error part of a bundle may have been written:
    ``export_bundle_v1`` writes to a file it then discards.
    """
    store = log.store
    first, last, cps = await _select(log, since_ns, until_ns, seal)
    end = cps[-1].size
    start = first - first % TILE_WIDTH
    cons_plans = [
        (a.size, b.size, merkle.consistency_plan(a.size, b.size))
        for a, b in itertools.pairwise(cps)
    ]

    def inside(n: Node) -> bool:
        return n.index << n.level >= start and (n.index + 1) << n.level <= end

    wanted = _outside_nodes(start, end)
    wanted.update(n for _, _, plan in cons_plans for el in plan for n in el if not inside(n))
    outside = await store.nodes(wanted)
    leaves = bytearray()
    for t in range(start // TILE_WIDTH, -(-end // TILE_WIDTH)):
        leaves += await store.tile(0, t, min(TILE_WIDTH, end - t * TILE_WIDTH))
    trees = _Subtrees(start, leaves, outside)
    del leaves, outside
    consistency = tuple(
        ConsistencyProof(a, b, tuple(trees.fold(el) for el in plan)) for a, b, plan in cons_plans
    )

    in_bundle = {c.size for c in cps}
    anchors = tuple(
        AnchorReceipt(a.checkpoint, a.backend, a.digest, a.state, json.loads(a.receipt))
        for a in await store.anchors()
        if a.checkpoint in in_bundle and a.state != "pending"
    )
    head = Bundle(
        origin=log.key.origin,
        device=log.key.device_id,
        keys=await device_keys(log),
        entries=(),
        checkpoints=tuple(c.note for c in cps),
        consistency=consistency,
        anchors=anchors,
        exported=format_time(clock()),
        exporter=_VERSION,
    ).dumps()
    if not head.endswith("\n" + _ENTRIES_MEMBER):
        raise GatewayError("export: Bundle.dumps no longer ends with the entries member")
    written = out.write(head.removesuffix(_ENTRIES_MEMBER).encode("utf-8") + b' "entries": [\n')

    bounds = [c.size for c in cps if c.size > first]  # the tree each entry is proven in
    proofs = _InclusionProofs(trees)
    b, size = 0, bounds[0]
    expect = first
    pending: list[str] = []
    sep = ""
    async for row in store.entries(first, last):
        if row.index != expect:
            raise GatewayError(f"log database has a hole at index {expect}")
        while expect >= size:
            b += 1
            size = bounds[b]
        pending.append(sep + _entry_text(expect, row.data, size, proofs.proof(expect, size)))
        sep = ",\n"
        expect += 1
        if len(pending) == _WRITE_EVERY:
            written += out.write("".join(pending).encode("utf-8"))
            pending.clear()
    if expect != last + 1:
        raise GatewayError(f"log database has a hole at index {expect}")
    pending.append("\n ]\n}\n")
    written += out.write("".join(pending).encode("utf-8"))
    return V1Summary(
        path=None,
        bytes=written,
        entries=last - first + 1,
        first=first,
        last=last,
        checkpoints=len(cps),
        anchors=len(anchors),
    )


@contextlib.contextmanager
def written_whole(path: Path) -> Iterator[BinaryIO]:
    """A file that appears at ``path`` whole or not at all: written to ``<path>.tmp``
    beside it, synced and renamed when the block ends; removed if the block raises
    (``path`` is then untouched)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("wb", buffering=1 << 20) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


async def export_bundle_v1(
    log: Log,
    path: Path,
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    seal: bool = True,
    clock: Callable[[], int] = time.time_ns,
) -> V1Summary:
    """``write_bundle_v1`` to ``path``: written to ``<path>.tmp`` beside it, synced, renamed.

    On any failure the temporary file is removed and ``path`` is untouched.
    """
    with written_whole(path) as f:
        summary = await write_bundle_v1(
            log, f, since_ns=since_ns, until_ns=until_ns, seal=seal, clock=clock
        )
    return dataclasses.replace(summary, path=path)


async def export_bundle(
    log: Log,
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    seal: bool = True,
    clock: Callable[[], int] = time.time_ns,
) -> Bundle:
    """The version 1 bundle ``write_bundle_v1`` writes, in memory: for small logs and tests."""
    buf = io.BytesIO()
    await write_bundle_v1(log, buf, since_ns=since_ns, until_ns=until_ns, seal=seal, clock=clock)
    return Bundle.loads(buf.getvalue())
