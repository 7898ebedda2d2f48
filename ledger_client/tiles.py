"""C2SP tlog-tiles: paths, entry bundles, and a streaming builder of a tree's tiles.

Pure code over ints and bytes (docs/bundle-format.md §14 and the C2SP
tlog-tiles spec): a tile of level L and index N holds up to 256 hashes of
tree level 8·L; level 0 holds leaf hashes, and hash i of tile (L, N) is the
Merkle Tree Hash of leaves ``[(N·256 + i)·256^L, (N·256 + i + 1)·256^L)``.
Only a tree's rightmost tile of each level may be partial; its width is
``floor(size / 256^L) mod 256``.

``TileBuilder`` takes leaf hashes in index order (optionally starting at a
tile boundary, seeded with the hashes to its left) and yields every full
tile as it completes, the partial tiles and the root at any size. It is the
one place a verifier and the gateway compute tiles, so memory stays
O(256 · levels) whatever the tree size.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from .errors import MalformedProof
from .merkle import EMPTY_ROOT, HASH_SIZE, node_hash

__all__ = [
    "ENTRIES",
    "MAX_ENTRY_BYTES",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "TileBuilder",
    "TileRef",
    "decode_entry_bundle",
    "encode_entry_bundle",
    "encode_index",
    "left_context",
    "parse_tile_path",
    "partial_tiles",
    "perfect_root",
    "split_hashes",
    "tile_path",
    "tiles_for",
]

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT  # 256 hashes, 8,192 bytes when full
MAX_ENTRY_BYTES = 0xFFFF  # an entry bundle prefixes each entry with a big-endian uint16
MAX_LEVEL = 63
ENTRIES = -1
"""The ``level`` of a ``TileRef`` that names an entry bundle (``tile/entries/...``)."""

_sha256 = hashlib.sha256


@dataclass(frozen=True, order=True, slots=True)
class TileRef:
    """A tile (``level`` ≥ 0) or entry bundle (``level`` = ENTRIES) and its width.

    ``width`` is 256 for a full tile and 1–255 for a partial one.
    """

    level: int
    index: int
    width: int = TILE_WIDTH

    @property
    def full(self) -> bool:
        return self.width == TILE_WIDTH

    @property
    def path(self) -> str:
        return tile_path(self.level, self.index, self.width)

    def __str__(self) -> str:
        return self.path


def encode_index(n: int) -> str:
    """N as 3-digit path elements, all but the last prefixed ``x``: 1234067 → x001/x234/067."""
    if n < 0:
        raise ValueError(f"tile index {n} is negative")
    parts = [f"{n % 1000:03d}"]
    n //= 1000
    while n:
        parts.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(parts))


def tile_path(level: int, index: int, width: int = TILE_WIDTH) -> str:
    """The tlog-tiles path of a tile (or, for ``level`` = ENTRIES, an entry bundle)."""
    if not 1 <= width <= TILE_WIDTH:
        raise ValueError(f"tile width {width} is not 1–{TILE_WIDTH}")
    if level == ENTRIES:
        head = "tile/entries/"
    elif 0 <= level <= MAX_LEVEL:
        head = f"tile/{level}/"
    else:
        raise ValueError(f"tile level {level} is not 0–{MAX_LEVEL}")
    tail = "" if width == TILE_WIDTH else f".p/{width}"
    return head + encode_index(index) + tail


_PATH_RE = re.compile(
    r"tile/(entries|0|[1-9][0-9]?)/((?:x[0-9]{3}/)*[0-9]{3})(?:\.p/([1-9][0-9]{0,2}))?",
    re.ASCII,
)


def parse_tile_path(path: str) -> TileRef:
    """The TileRef a path names; ValueError unless it is exactly a canonical tile path."""
    m = _PATH_RE.fullmatch(path)
    if m is None:
        raise ValueError(f"{path!r} is not a tlog-tiles path")
    level_text, index_text, width_text = m.groups()
    elements = index_text.split("/")
    if len(elements) > 1 and elements[0] == "x000":
        raise ValueError(f"{path!r}: the tile index has a leading zero element")
    index = int("".join(e.lstrip("x") for e in elements))
    width = TILE_WIDTH if width_text is None else int(width_text)
    if width_text is not None and width >= TILE_WIDTH:
        raise ValueError(f"{path!r}: a partial tile is 1–255 wide")
    level = ENTRIES if level_text == "entries" else int(level_text)
    if level > MAX_LEVEL:
        raise ValueError(f"{path!r}: level above {MAX_LEVEL}")
    return TileRef(level, index, width)


def partial_tiles(size: int) -> list[TileRef]:
    """The partial hash tiles of a tree of ``size`` (lowest level first; none are empty)."""
    out = []
    level, n = 0, size
    while n:
        width = n % TILE_WIDTH
        if width:
            out.append(TileRef(level, n // TILE_WIDTH, width))
        n //= TILE_WIDTH
        level += 1
    return out


def tiles_for(size: int, *, start: int = 0) -> Iterator[TileRef]:
    """Every hash tile of a tree of ``size``, level by level, left to right.

    With ``start`` (a leaf index), only the tiles holding a hash of a subtree
    that ends after ``start`` are listed: what a reader who has the rest must
    still fetch. Entry bundles are the level-0 tiles' twins (same index and width).
    """
    level, n, first = 0, size, start
    while n:
        full, width = divmod(n, TILE_WIDTH)
        for i in range(first // TILE_WIDTH, full):
            yield TileRef(level, i)
        if width:
            yield TileRef(level, full, width)
        n = full
        first //= TILE_WIDTH
        level += 1


def left_context(start: int, size: int) -> list[TileRef]:
    """The hash tiles above level 0 that seed a TileBuilder at ``start`` for a tree of ``size``.

    ``start`` is a multiple of 256 and at most ``size``. For each level L ≥ 1
    whose tile holding ``start`` has hashes to the left of it, the smallest
    tile of that tree which holds them: the full tile if ``size`` completes
    it, else the partial tile of ``size``.
    """
    if start % TILE_WIDTH or not 0 <= start <= size:
        raise ValueError(f"start {start} is not a tile boundary within size {size}")
    out = []
    level, below = 1, start // TILE_WIDTH
    while below:
        if below % TILE_WIDTH:
            index = below // TILE_WIDTH
            span = TILE_WIDTH ** (level + 1)
            if (index + 1) * span <= size:
                out.append(TileRef(level, index))
            else:
                out.append(TileRef(level, index, (size // TILE_WIDTH**level) % TILE_WIDTH))
        below //= TILE_WIDTH
        level += 1
    return out


def encode_entry_bundle(entries: Iterable[bytes]) -> bytes:
    """Entries, each prefixed by its big-endian uint16 length."""
    out = bytearray()
    for e in entries:
        if len(e) > MAX_ENTRY_BYTES:
            raise ValueError(f"an entry of {len(e)} bytes does not fit an entry bundle")
        out += len(e).to_bytes(2, "big")
        out += e
    return bytes(out)


def decode_entry_bundle(data: bytes, width: int) -> list[bytes]:
    """Exactly ``width`` entries from an entry bundle; MalformedProof on any other shape."""
    entries: list[bytes] = []
    at, end = 0, len(data)
    view = memoryview(data)
    while at < end:
        if at + 2 > end:
            raise MalformedProof(f"entry bundle: a length prefix is cut at byte {at}")
        n = (data[at] << 8) | data[at + 1]
        at += 2
        if at + n > end:
            raise MalformedProof(
                f"entry bundle: entry {len(entries)} claims {n} bytes, only {end - at} remain"
            )
        entries.append(bytes(view[at : at + n]))
        at += n
    if len(entries) != width:
        raise MalformedProof(f"entry bundle holds {len(entries)} entries, not {width}")
    return entries


def perfect_root(hashes: Sequence[bytes]) -> bytes:
    """MTH of a power-of-two run of subtree hashes (e.g. a full tile's 256)."""
    level = list(hashes)
    n = len(level)
    if n == 0 or n & (n - 1):
        raise ValueError(f"{n} hashes are not a perfect subtree")
    while len(level) > 1:
        level = [
            _sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)
        ]
    return level[0]


def split_hashes(data: bytes, what: str) -> list[bytes]:
    """A hash tile's bytes as its hashes; MalformedProof unless whole 32-byte hashes."""
    if len(data) % HASH_SIZE or not data or len(data) > TILE_WIDTH * HASH_SIZE:
        raise MalformedProof(f"{what}: {len(data)} bytes is not 1–256 hashes of 32 bytes")
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


class TileBuilder:
    """The tiles of an append-only tree, built from its leaf hashes in order.

    ``TileBuilder()`` starts at the empty tree. ``TileBuilder(start, context)``
    starts at leaf ``start`` (a multiple of 256): ``context`` maps each level
    L ≥ 1 whose tile holding ``start`` has hashes left of it to those hashes
    (at least ``floor(start / 256^L) mod 256`` of them, from a tile as
    ``left_context`` names; extra ones are ignored here, for the caller to
    check against what the builder computes).

    Full tiles are kept until ``take_full_tiles`` hands them out, so a caller
    drains them after each batch of appends.
    """

    __slots__ = ("_current", "_edge", "_full", "size")

    def __init__(
        self, start: int = 0, context: Mapping[int, Sequence[bytes]] | None = None
    ) -> None:
        if start % TILE_WIDTH or start < 0:
            raise ValueError(f"a TileBuilder starts at a tile boundary, not {start}")
        self.size = 0
        # The right edge of the tree: (level, hash) of the perfect subtrees of the
        # size's binary decomposition, largest first.
        self._edge: list[tuple[int, bytes]] = []
        self._current: list[list[bytes]] = [[]]  # per tile level, the rightmost tile's hashes
        self._full: list[tuple[int, int, bytes]] = []
        context = context or {}
        need = _context_widths(start)
        for level in sorted(need, reverse=True):
            hashes = context.get(level)
            if hashes is None or len(hashes) < need[level]:
                have = 0 if hashes is None else len(hashes)
                raise MalformedProof(
                    f"starting at leaf {start} needs {need[level]} hashes of tile level "
                    f"{level}, not {have}"
                )
            for h in hashes[: need[level]]:
                if len(h) != HASH_SIZE:
                    raise MalformedProof(f"a level-{level} hash is {len(h)} bytes")
                self._push(level * TILE_HEIGHT, h, record=False)
        # Merges while seeding filled in higher levels; the context is the truth.
        self._current = [[] for _ in range(max(need, default=0) + 1)]
        for level, n in need.items():
            self._current[level] = list(context[level][:n])
        self._full = []

    def _push(self, level: int, h: bytes, *, record: bool = True) -> None:
        """Add a perfect subtree of 2**level leaves at the right edge (size % 2**level == 0)."""
        edge = self._edge
        self.size += 1 << level
        if record and level % TILE_HEIGHT == 0:
            self._add_tile_hash(level // TILE_HEIGHT, h)
        while edge and edge[-1][0] == level:
            h = node_hash(edge.pop()[1], h)
            level += 1
            if level % TILE_HEIGHT == 0:
                self._add_tile_hash(level // TILE_HEIGHT, h)
        edge.append((level, h))

    def _add_tile_hash(self, tile_level: int, h: bytes) -> None:
        """Record a hash of tile level ``tile_level`` that ``size`` already includes."""
        current = self._current
        while len(current) <= tile_level:
            current.append([])
        row = current[tile_level]
        row.append(h)
        if len(row) == TILE_WIDTH:
            index = ((self.size >> (TILE_HEIGHT * tile_level)) - 1) // TILE_WIDTH
            self._full.append((tile_level, index, b"".join(row)))
            current[tile_level] = []

    def append(self, leaf: bytes) -> None:
        """Add the next leaf hash."""
        self._push(0, leaf)

    def append_tile(self, leaves: Sequence[bytes]) -> None:
        """Add 256 leaf hashes at a tile boundary: the same result as 256 appends, faster."""
        if len(leaves) != TILE_WIDTH or self.size % TILE_WIDTH:
            for leaf in leaves:
                self._push(0, leaf)
            return
        if self._current[0]:  # pragma: no cover - size % 256 == 0 means level 0 is empty
            raise AssertionError("level-0 tile not empty at a tile boundary")
        self.size += TILE_WIDTH
        self._full.append((0, self.size // TILE_WIDTH - 1, b"".join(leaves)))
        self.size -= TILE_WIDTH
        self._push(TILE_HEIGHT, perfect_root(leaves))

    def take_full_tiles(self) -> list[tuple[int, int, bytes]]:
        """The full tiles completed since the last call: (level, index, 8,192 bytes)."""
        out, self._full = self._full, []
        return out

    def partial(self, level: int) -> bytes:
        """The rightmost, partial tile of ``level`` at the current size (b"" if empty)."""
        if level >= len(self._current):
            return b""
        return b"".join(self._current[level])

    def partials(self) -> list[tuple[TileRef, bytes]]:
        """Every non-empty partial tile at the current size, lowest level first."""
        out = []
        for ref in partial_tiles(self.size):
            out.append((ref, self.partial(ref.level)))
        return out

    def root(self) -> bytes:
        """The RFC 9162 root of the tree so far."""
        if not self._edge:
            return EMPTY_ROOT
        acc = self._edge[-1][1]
        for _, h in reversed(self._edge[:-1]):
            acc = node_hash(h, acc)
        return acc


def _context_widths(start: int) -> dict[int, int]:
    """Per tile level L ≥ 1, how many hashes lie left of ``start`` in its tile (if any)."""
    need = {}
    level, below = 1, start // TILE_WIDTH
    while below:
        if below % TILE_WIDTH:
            need[level] = below % TILE_WIDTH
        below //= TILE_WIDTH
        level += 1
    return need
