"""ledger_client.tiles against two references that share none of its code.

1. ``SpecTree`` below: C2SP tlog-tiles and RFC 9162 §2.1 written out with
   hashlib only. Hash i of tile (L, N) is MTH(D[(N·256+i)·256^L :
   (N·256+i+1)·256^L]); the rightmost tile of level L for size s holds
   floor(s / 256^L) mod 256 hashes and is served as ``.p/<W>``; empty tiles
   are never served. MTH is memoised per (lo, hi), and tiles are asked for
   level by level, so each perfect subtree is hashed once, bottom up.
2. Go's golang.org/x/mod/sumdb/tlog (Debian: golang-golang-x-mod-dev), the
   implementation tlog-tiles grew from, driven by tiles_ref/main.go and
   built offline against /usr/share/gocode. Its paths carry the tile height,
   ``tile/8/<L>/<N>``; they are mapped to ``tile/<L>/<N>`` here.

Sizes: 1, 255, 256, 257, 65,536, 70,000 and a random one (its value is in
the test ids; set RIVERSEAL_TILES_SIZE to repeat a run with a given size).
The gateway's store is compared with both at the end.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from gateway.errors import StoreError
from gateway.keys import create_device_key
from gateway.log import Log
from gateway.pipeline import Reading, Value
from gateway.store import Store
from ledger_client import merkle
from ledger_client.tiles import (
    ENTRIES,
    TILE_WIDTH,
    TileBuilder,
    TileRef,
    decode_entry_bundle,
    encode_entry_bundle,
    left_context,
    parse_tile_path,
    partial_tiles,
    tile_path,
    tiles_for,
)

RANDOM_SIZE = int(
    os.environ.get("RIVERSEAL_TILES_SIZE") or random.SystemRandom().randrange(2, 100_000)
)
SIZES = [1, 255, 256, 257, 65_536, 70_000, RANDOM_SIZE]
SIZE_IDS = [str(s) for s in SIZES[:-1]] + [f"random-{RANDOM_SIZE}"]
MAX_SIZE = max(SIZES)

GO_SRC = Path(__file__).with_name("tiles_ref")
GOCODE = Path("/usr/share/gocode")
TLOG_SRC = GOCODE / "src" / "golang.org" / "x" / "mod" / "sumdb" / "tlog"
SETUP_HINT = "run scripts/setup --dev (it installs golang-go and golang-golang-x-mod-dev)"


# -- reference 1: the spec, with hashlib only -------------------------------------------------


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class SpecTree:
    """RFC 9162 Merkle Tree Hashes of a fixed list of entries, each (lo, hi) computed once."""

    def __init__(self, entries: Sequence[bytes]) -> None:
        self.entries = entries
        self._memo: dict[tuple[int, int], bytes] = {}

    def mth(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]): SHA-256(0x00‖d) for one entry, else split at the largest 2^k < n."""
        key = (lo, hi)
        h = self._memo.get(key)
        if h is None:
            n = hi - lo
            if n == 0:
                h = _sha256(b"")
            elif n == 1:
                h = _sha256(b"\x00" + self.entries[lo])
            else:
                k = 1
                while k * 2 < n:
                    k *= 2
                h = _sha256(b"\x01" + self.mth(lo, lo + k) + self.mth(lo + k, hi))
            self._memo[key] = h
        return h


def spec_path(level: int | str, n: int, width: int) -> str:
    """tile/<L>/<N>[.p/<W>], N in 3-digit elements, all but the last prefixed x."""
    digits = str(n)
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    path = f"tile/{level}/" + "/".join(["x" + g for g in groups[:-1]] + [groups[-1]])
    return path if width == 256 else f"{path}.p/{width}"


def spec_tiles(tree: SpecTree, size: int) -> dict[str, bytes]:
    """Every hash tile a log of ``size`` serves, by path."""
    out = {}
    level = 0
    while 256**level <= size:
        span = 256**level
        count = size // span  # hashes of level L in the tree: floor(s / 256^L)
        for n in range(count // 256 + 1):
            width = min(256, count - n * 256)
            if width == 0:  # empty tiles are never served
                break
            hashes = [
                tree.mth((n * 256 + i) * span, (n * 256 + i + 1) * span) for i in range(width)
            ]
            out[spec_path(level, n, width)] = b"".join(hashes)
        level += 1
    return out


def spec_bundles(entries: Sequence[bytes], size: int) -> dict[str, bytes]:
    """Every entry bundle of a log of ``size``: entries, each after its big-endian uint16 length."""
    out = {}
    for n in range((size + 255) // 256):
        width = min(256, size - n * 256)
        chunk = entries[n * 256 : n * 256 + width]
        out[spec_path("entries", n, width)] = b"".join(len(e).to_bytes(2, "big") + e for e in chunk)
    return out


def entry(i: int) -> bytes:
    """Deterministic entries 0–97 bytes long (entry 0 is empty); entry 256 is 65,535 bytes."""
    if i == 256:  # the one entry of size 257's partial tile, as long as a bundle allows
        return bytes(range(256)) * 255 + bytes(range(255))
    n = (i * 7919) % 98
    return (i.to_bytes(4, "big") * 25)[:n]


# -- ledger_client.tiles -----------------------------------------------------------------------


def project_tiles(
    leaves: Sequence[bytes], size: int, *, whole_tiles: bool
) -> tuple[dict[str, bytes], bytes]:
    """The tiles and root TileBuilder gives for the first ``size`` leaf hashes."""
    builder = TileBuilder()
    out: dict[str, bytes] = {}

    def drain() -> None:
        for level, index, data in builder.take_full_tiles():
            path = tile_path(level, index)
            assert path not in out, f"size {size}: TileBuilder gave {path} twice"
            out[path] = data

    for at in range(0, size, TILE_WIDTH):
        chunk = leaves[at : min(at + TILE_WIDTH, size)]
        if whole_tiles:
            builder.append_tile(chunk)
        else:
            for leaf in chunk:
                builder.append(leaf)
        drain()
    assert builder.size == size
    for ref, data in builder.partials():
        assert ref.path not in out, f"size {size}: TileBuilder gave {ref.path} twice"
        out[ref.path] = data
    return out, builder.root()


def diff_tiles(got: Mapping[str, bytes], want: Mapping[str, bytes]) -> list[str]:
    """Missing, extra and differing tiles, each differing one with its first differing hash."""
    problems = [f"missing {p}" for p in sorted(want.keys() - got.keys())]
    problems += [f"extra {p}" for p in sorted(got.keys() - want.keys())]
    for p in sorted(want.keys() & got.keys()):
        g, w = got[p], want[p]
        if g == w:
            continue
        if len(g) != len(w):
            problems.append(f"{p}: {len(g)} bytes, want {len(w)}")
            continue
        at = next(i for i in range(len(g)) if g[i] != w[i])
        problems.append(f"{p}: hash {at // 32} differs (byte offset {at})")
    return problems


def assert_same(got: Mapping[str, bytes], want: Mapping[str, bytes], what: str) -> None:
    problems = diff_tiles(got, want)
    shown = "\n  ".join(problems[:20])
    more = f"\n  … and {len(problems) - 20} more" if len(problems) > 20 else ""
    assert not problems, f"{what}: {len(problems)} disagreements\n  {shown}{more}"


# -- reference 2: Go's sumdb/tlog ---------------------------------------------------------------


def go_env(scratch: Path) -> dict[str, str]:
    """Build against Debian's Go sources only: GOPATH mode, no proxy, no toolchain switch."""
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": str(GOCODE),
        "GOFLAGS": "",
        "GOPROXY": "off",
        "GOTOOLCHAIN": "local",
        "GOENV": "off",
        "CGO_ENABLED": "0",
    }
    if not any(env.get(v) for v in ("GOCACHE", "XDG_CACHE_HOME", "HOME")):
        env["GOCACHE"] = str(scratch / "gocache")
    return env


@pytest.fixture(scope="session")
def go_ref(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiles_ref/main.go built once per session; fails (not skips) without Go or x/mod."""
    go = shutil.which("go")
    if go is None:
        pytest.fail(f"the go command is missing: {SETUP_HINT}", pytrace=False)
    if not (TLOG_SRC / "tile.go").is_file():
        pytest.fail(
            f"golang.org/x/mod/sumdb/tlog is missing at {TLOG_SRC}: {SETUP_HINT}", pytrace=False
        )
    scratch = tmp_path_factory.mktemp("tiles_ref")
    binary = scratch / "tiles_ref"
    proc = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=GO_SRC,
        env=go_env(scratch),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        pytest.fail(f"go build of {GO_SRC} failed ({SETUP_HINT}):\n{proc.stderr}", pytrace=False)
    return binary


def go_path_to_c2sp(path: str) -> str:
    """tile/8/<L>/<N>[.p/<W>] (Go, with the height) → tile/<L>/<N>[.p/<W>]."""
    assert path.startswith("tile/8/"), path
    rest = path.removeprefix("tile/8/")
    assert not rest.startswith("data/"), path
    return "tile/" + rest


def c2sp_path_to_go(path: str) -> str:
    """The Go form of a (possibly malformed) C2SP path: height 8 inserted, entries → data.

    ``tile/data/…`` is not a C2SP path; it is passed as it is, which Go rejects too.
    """
    if path.startswith("tile/entries/"):
        return "tile/8/data/" + path.removeprefix("tile/entries/")
    if path.startswith("tile/") and not path.startswith("tile/data/"):
        return "tile/8/" + path.removeprefix("tile/")
    return path


def run_go_tiles(
    binary: Path, entries: Sequence[bytes], sizes: Sequence[int]
) -> dict[int, tuple[bytes, dict[str, bytes]]]:
    """Per size: Go's root and tiles (C2SP paths) for the first ``size`` of ``entries``."""
    stdin = b"".join(len(e).to_bytes(4, "big") + e for e in entries)
    proc = subprocess.run(
        [str(binary), "tiles", *map(str, sizes)],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    out: dict[int, tuple[bytes, dict[str, bytes]]] = {}
    tiles: dict[str, bytes] = {}
    size = -1
    for line in proc.stdout.decode("ascii").splitlines():
        head, _, value = line.partition(" ")
        if head == "size":
            size, tiles = int(value), {}
        elif head == "root":
            out[size] = (bytes.fromhex(value), tiles)
        else:
            tiles[go_path_to_c2sp(head)] = bytes.fromhex(value)
    assert sorted(out) == sorted(set(sizes))
    return out


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def entries() -> list[bytes]:
    return [entry(i) for i in range(MAX_SIZE)]


@pytest.fixture(scope="session")
def spec_tree(entries: list[bytes]) -> SpecTree:
    return SpecTree(entries)


class SpecTiles(dict[int, dict[str, bytes]]):
    """The reference tiles per size, computed on first use."""

    def __init__(self, tree: SpecTree) -> None:
        super().__init__()
        self.tree = tree

    def __missing__(self, size: int) -> dict[str, bytes]:
        self[size] = tiles = spec_tiles(self.tree, size)
        return tiles


@pytest.fixture(scope="session")
def spec(spec_tree: SpecTree) -> SpecTiles:
    return SpecTiles(spec_tree)


@pytest.fixture(scope="session")
def leaves(entries: list[bytes]) -> list[bytes]:
    """The leaf hashes as the project computes them (ledger_client.merkle.leaf_hash)."""
    return [merkle.leaf_hash(e) for e in entries]


@pytest.fixture(scope="session")
def go_tiles(go_ref: Path, entries: list[bytes]) -> dict[int, tuple[bytes, dict[str, bytes]]]:
    return run_go_tiles(go_ref, entries, SIZES)


# -- the reference checks itself against the shared document --------------------------------


def test_spec_reference_matches_the_documented_roots() -> None:
    """The 8 leaves of transparency-dev/merkle's LeafInputs() give the roots in the reference §1."""
    leaves = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243")]
    leaves += [bytes.fromhex("5051525354555657"), bytes.fromhex("606162636465666768696a6b6c6d6e6f")]
    roots = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ]
    tree = SpecTree(leaves)
    assert [tree.mth(0, n).hex() for n in range(9)] == roots


def test_spec_reference_widths_match_the_spec_example(spec: SpecTiles) -> None:
    """Size 70,000: 273 full level-0 tiles, a level-0 partial of 112, one full level-1 tile,
    a level-1 partial of 17, a level-2 partial of 1."""
    paths = spec[70_000].keys()
    assert sum(1 for p in paths if p.startswith("tile/0/") and ".p/" not in p) == 273
    partial = sorted(p for p in paths if ".p/" in p)
    assert partial == ["tile/0/273.p/112", "tile/1/001.p/17", "tile/2/000.p/1"]
    assert "tile/1/000" in paths and len(paths) == 273 + 1 + 1 + 1 + 1
    assert spec_path(0, 1234067, 256) == "tile/0/x001/x234/067"


# -- ledger_client.tiles vs the spec -----------------------------------------------------------


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_tiles_match_the_spec(
    size: int, leaves: list[bytes], spec: SpecTiles, spec_tree: SpecTree
) -> None:
    want = spec[size]
    assert [r.path for r in tiles_for(size)] == list(want), "tiles_for lists other tiles"
    assert [(r.level, r.index, r.width) for r in partial_tiles(size)] == [
        (level, size // 256 ** (level + 1), (size // 256**level) % 256)
        for level in range(8)
        if (size // 256**level) % 256
    ]
    for whole_tiles in (False, True):
        got, root = project_tiles(leaves, size, whole_tiles=whole_tiles)
        how = "append_tile" if whole_tiles else "append"
        assert_same(got, want, f"size {size}, TileBuilder by {how} vs the spec")
        assert root == spec_tree.mth(0, size)


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_entry_bundles_match_the_spec(size: int, entries: list[bytes], spec: SpecTiles) -> None:
    want = spec_bundles(entries, size)
    got = {}
    for ref in tiles_for(size):
        if ref.level != 0:
            continue
        bundle = TileRef(ENTRIES, ref.index, ref.width)
        lo = ref.index * TILE_WIDTH
        got[bundle.path] = data = encode_entry_bundle(entries[lo : lo + ref.width])
        assert decode_entry_bundle(data, ref.width) == entries[lo : lo + ref.width]
        # Entry i of bundle N hashes to hash i of level-0 tile N.
        tile = spec[size][ref.path]
        assert [_sha256(b"\x00" + e) for e in decode_entry_bundle(data, ref.width)] == [
            tile[i : i + 32] for i in range(0, len(tile), 32)
        ]
    assert_same(got, want, f"size {size}, entry bundles vs the spec")


@pytest.mark.parametrize(
    "size", [70_000, 65_536 + 256, RANDOM_SIZE], ids=["70000", "65792", f"random-{RANDOM_SIZE}"]
)
def test_a_builder_seeded_with_left_context_matches_the_spec(
    size: int, leaves: list[bytes], spec_tree: SpecTree, spec: SpecTiles
) -> None:
    """A builder that starts mid-tree from the tiles left_context names gives the rest."""
    tiles = spec[size]
    last = size // TILE_WIDTH * TILE_WIDTH
    for start in sorted({0, 256, 256 * 255, 65_536, 256 * 257, last // 2 // 256 * 256, last}):
        if start > size:
            continue
        context = {}
        for ref in left_context(start, size):
            data = tiles[ref.path]
            context[ref.level] = [data[i : i + 32] for i in range(0, len(data), 32)]
        builder = TileBuilder(start, context)
        for at in range(start, size, TILE_WIDTH):
            builder.append_tile(leaves[at : min(at + TILE_WIDTH, size)])
        assert builder.size == size
        got = {tile_path(lv, n): d for lv, n, d in builder.take_full_tiles()}
        got |= {ref.path: d for ref, d in builder.partials()}
        want = {r.path: tiles[r.path] for r in tiles_for(size, start=start)}
        assert_same(got, want, f"size {size}, builder seeded at {start} vs the spec")
        assert builder.root() == spec_tree.mth(0, size)


# -- ledger_client.tiles vs Go -----------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_tiles_match_go(
    size: int,
    leaves: list[bytes],
    go_tiles: dict[int, tuple[bytes, dict[str, bytes]]],
    spec: SpecTiles,
) -> None:
    # Go's tlog has data tiles (level -1, tile/8/data/N) in its path syntax only:
    # their content is the application's (the checksum database joins its records
    # itself), so there is no Go format to compare encode_entry_bundle with. The
    # bundles are checked against the spec and against level-0 tiles above.
    go_root, go = go_tiles[size]
    got, root = project_tiles(leaves, size, whole_tiles=True)
    assert_same(got, go, f"size {size}, TileBuilder vs Go's sumdb/tlog")
    assert_same(spec[size], go, f"size {size}, the spec reference vs Go's sumdb/tlog")
    assert root == go_root


# -- paths -------------------------------------------------------------------------------------

REJECTED = [
    "tile/0/x000/001",  # a leading zero element
    "tile/0/x000/x001/002",
    "tile/0/x000/000",
    "tile/0/001.p/256",  # a partial tile is 1–255 wide
    "tile/0/001.p/0",
    "tile/0/001.p/1000",
    "tile/0/001.p/05",
    "tile/0/001.p/",
    "tile/0/001.p",
    "tile/entries/001.p/256",
    "tile/entries/001.p/0",
    "tile/00/001",  # leading zeros in the level
    "tile/01/001",
    "tile/064/001",
    "tile/64/001",  # levels are 0–63
    "tile/100/001",
    "tile/-1/001",
    "tile/0/001/",  # a trailing slash
    "tile/0/001.p/5/",
    "tile/0/x001/",
    "/tile/0/001",
    "tile/0/1",  # not 3-digit elements
    "tile/0/0001",
    "tile/0/01",
    "tile/0/x1/001",
    "tile/0/X001/001",
    "tile/0/x001",
    "tile/0/001/002",
    "tile//001",
    "tile/0/",
    "tile/0",
    "tile/entries",
    "tile/data/001",  # Go's form
    "tile/8/0/001",
    "tile/0/001\n",
    "tile/0/00\u0661",  # a non-ASCII digit
    "tile/+1/001",
    "tile/0/+01",
    "tile/0/001.p/+5",
]


def round_trip_refs(*, full: bool) -> list[TileRef]:
    """Tiles and entry bundles of every level, small and huge indexes; full or partial ones."""
    rng = random.Random(20240601 + full)
    refs = [
        TileRef(0, 0, 1),
        TileRef(ENTRIES, 0, 255),
        TileRef(63, 999, 9),
        TileRef(1, 1000, 128),
        TileRef(2, 1_234_067, 1),
        TileRef(ENTRIES, 10**18 - 1, 17),
        TileRef(5, 10**18, 200),
    ]
    refs += [TileRef(r.level, r.index) for r in refs] + [TileRef(0, 0)]
    for _ in range(150):
        level = rng.randrange(-1, 64)
        index = rng.randrange(10 ** rng.randrange(1, 19))
        refs.append(TileRef(level, index, rng.randrange(1, 256)))
        refs.append(TileRef(level, index))
    return [r for r in refs if r.full == full]


def check_round_trips(refs: Sequence[TileRef]) -> None:
    for ref in refs:
        level: int | str = "entries" if ref.level == ENTRIES else ref.level
        path = tile_path(ref.level, ref.index, ref.width)
        assert path == spec_path(level, ref.index, ref.width) == ref.path
        assert parse_tile_path(path) == ref, path


def test_partial_tile_paths_round_trip() -> None:
    check_round_trips(round_trip_refs(full=False))


def test_full_tile_paths_round_trip() -> None:
    check_round_trips(round_trip_refs(full=True))


@pytest.mark.parametrize("path", REJECTED)
def test_non_canonical_tile_paths_are_rejected(path: str) -> None:
    with pytest.raises(ValueError):
        parse_tile_path(path)


def test_tile_path_refuses_what_it_cannot_name() -> None:
    for level, index, width in [(0, 0, 0), (0, 0, 257), (64, 0, 256), (-2, 0, 256), (0, -1, 256)]:
        with pytest.raises(ValueError):
            tile_path(level, index, width)


def check_paths_parse_as_go_parses_them(go_ref: Path, paths: Sequence[str]) -> None:
    """parse_tile_path and Go's ParseTilePath accept the same paths, as the same tiles.

    The one allowed difference: Go has no level limit, tlog-tiles stops at 63.
    """
    paths = [p for p in paths if "\n" not in p]
    proc = subprocess.run(
        [str(go_ref), "parse"],
        input="".join(c2sp_path_to_go(p) + "\n" for p in paths),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    answers = proc.stdout.splitlines()
    assert len(answers) == len(paths)
    for path, answer in zip(paths, answers, strict=True):
        try:
            ref = parse_tile_path(path)
        except ValueError:
            ours = "bad"
        else:
            ours = f"ok {ref.level} {ref.index} {ref.width}"
        if answer != ours:
            kind, level, *_ = [*answer.split(), ""]
            assert kind == "ok" and ours == "bad" and int(level) > 63, (path, answer, ours)


def test_partial_and_malformed_paths_parse_as_go_parses_them(go_ref: Path) -> None:
    check_paths_parse_as_go_parses_them(
        go_ref, [r.path for r in round_trip_refs(full=False)] + REJECTED
    )


def test_full_tile_paths_parse_as_go_parses_them(go_ref: Path) -> None:
    check_paths_parse_as_go_parses_them(go_ref, [r.path for r in round_trip_refs(full=True)])


# -- the gateway's store -----------------------------------------------------------------------

T0 = 1_700_000_000_000_000_000


def reading(i: int) -> Reading:
    value = Value("ph", 6.5 + (i * 37 % 200) / 100, "pH")
    return Reading(f"s{i % 5}", (value,), T0 + i * 1_000_000, raw=f"{value.value:.2f}")


@pytest.mark.xfail(
    not (hasattr(Store, "tile") and hasattr(Store, "entry_bundle")),
    reason="gateway.store.Store.tile / entry_bundle are not written yet",
    raises=AttributeError,
    strict=True,
)
async def test_gateway_store_tiles_match_both_references(tmp_path: Path, go_ref: Path) -> None:
    """A real Log over a real Store, grown through every size: its tiles and bundles are
    what the spec and Go compute from the entries it stored."""
    key = create_device_key(tmp_path / "device.key")
    sizes = sorted(set(SIZES))
    served: dict[int, tuple[dict[str, bytes], dict[str, bytes], bytes]] = {}
    entries: list[bytes] = []
    async with Store(tmp_path / "log.sqlite") as store:
        log = Log(store, key, clock=lambda: T0)
        await log.open()
        for size in sizes:
            while log.size < size:
                batch = min(5_000, size - log.size)
                await log.append([reading(log.size + i) for i in range(batch)])
            assert log.size == size
            entries += [r.data async for r in store.entries(len(entries), size - 1)]
            tiles, bundles = {}, {}
            for ref in tiles_for(size):
                tiles[ref.path] = await store.tile(ref.level, ref.index, ref.width)
                if ref.level == 0:
                    bundle = await store.entry_bundle(ref.index, ref.width)
                    bundles[tile_path(ENTRIES, ref.index, ref.width)] = bundle
            # Empty tiles and hashes the tree does not have yet are not served.
            last = (
                partial_tiles(size)[0] if size % TILE_WIDTH else TileRef(0, size // TILE_WIDTH, 0)
            )
            with pytest.raises(StoreError):
                await store.tile(0, last.index, last.width + 1)
            with pytest.raises(StoreError):
                await store.entry_bundle(last.index, last.width + 1)
            served[size] = (tiles, bundles, log.root())
    assert len(entries) == MAX_SIZE
    tree = SpecTree(entries)
    go = run_go_tiles(go_ref, entries, sizes)
    for size in sizes:
        tiles, bundles, root = served[size]
        assert_same(tiles, spec_tiles(tree, size), f"size {size}, gateway Store.tile vs the spec")
        assert_same(tiles, go[size][1], f"size {size}, gateway Store.tile vs Go's sumdb/tlog")
        assert_same(
            bundles, spec_bundles(entries, size), f"size {size}, Store.entry_bundle vs the spec"
        )
        assert root == tree.mth(0, size) == go[size][0]
