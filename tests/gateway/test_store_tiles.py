"""Store schema version 2: tile-level subtree hashes, hash tiles, entry bundles, v1 migration."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from gateway.errors import StoreError
from gateway.keys import DeviceKey, create_device_key
from gateway.log import Event, Log
from gateway.store import SCHEMA_VERSION, Store
from ledger_client import merkle
from ledger_client.merkle import Node
from ledger_client.tiles import (
    TileBuilder,
    TileRef,
    decode_entry_bundle,
    encode_entry_bundle,
    perfect_root,
    split_hashes,
    tiles_for,
)
from tests.gateway.migration_kill import kill_before_commit

# The schema of version 1 exactly as riverseal 0.1.0 created it: frozen here, never
# to follow the store's current schema.
V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE entries (
    idx     INTEGER PRIMARY KEY,
    kind    TEXT NOT NULL,
    sensor  TEXT,
    seq     INTEGER,
    time_ns INTEGER NOT NULL,
    dedup   TEXT,
    data    BLOB NOT NULL
);
CREATE UNIQUE INDEX entries_dedup ON entries (sensor, dedup) WHERE dedup IS NOT NULL;
CREATE INDEX entries_sensor_seq ON entries (sensor, seq) WHERE sensor IS NOT NULL;
CREATE INDEX entries_time ON entries (time_ns);
CREATE TABLE nodes (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE checkpoints (
    size    INTEGER PRIMARY KEY,
    root    BLOB NOT NULL,
    note    TEXT NOT NULL,
    time_ns INTEGER NOT NULL
);
CREATE TABLE anchors (
    checkpoint INTEGER NOT NULL REFERENCES checkpoints (size),
    backend    TEXT NOT NULL,
    digest     BLOB NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('pending', 'included', 'final')),
    receipt    TEXT NOT NULL DEFAULT '{}',
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL,
    PRIMARY KEY (checkpoint, backend)
);
CREATE INDEX anchors_by_backend ON anchors (backend, checkpoint);
CREATE INDEX anchors_open ON anchors (backend, checkpoint) WHERE state != 'final';
"""


def entry(i: int) -> bytes:
    return f'{{"index":{i},"kind":"event","pad":"{"x" * (i % 37)}"}}'.encode()


def make_v1_store(
    path: Path, entries: list[bytes], checkpoints: list[int], key: DeviceKey | None = None
) -> merkle.MerkleTree:
    """A version 1 database as riverseal 0.1.0 left it: every perfect subtree stored."""
    tree = merkle.MerkleTree()
    nodes: list[tuple[int, int, bytes]] = []
    frontier = merkle.Frontier()
    for e in entries:
        tree.append(e)
        nodes.extend(frontier.append(merkle.leaf_hash(e)))
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(V1_SCHEMA)
        db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        if key is not None:
            for k, v in (
                ("device_id", key.device_id),
                ("origin", key.origin),
                ("vkey", key.vkey),
                ("created", "2024-01-01T00:00:00Z"),
            ):
                db.execute("INSERT INTO meta VALUES (?, ?)", (k, v))
        db.executemany(
            "INSERT INTO entries VALUES (?, 'event', NULL, NULL, ?, NULL, ?)",
            [(i, 1_000 + i, e) for i, e in enumerate(entries)],
        )
        db.executemany("INSERT INTO nodes VALUES (?, ?, ?)", nodes)
        db.executemany(
            "INSERT INTO checkpoints VALUES (?, ?, ?, ?)",
            [(s, tree.root(s), f"checkpoint {s}", 2_000 + s) for s in checkpoints],
        )
    db.close()
    return tree


def node_rows(path: Path) -> tuple[str, int, set[int]]:
    """(schema_version, how many node rows, which levels) read behind the store's back."""
    with sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True) as db:
        version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        count = db.execute("SELECT COUNT(*) FROM nodes").fetchone()[0]
        levels = {lv for (lv,) in db.execute("SELECT DISTINCT level FROM nodes")}
    db.close()
    return version, count, levels


async def proofs(store: Store, size: int, indices: list[int], sizes: list[int]) -> list[bytes]:
    """Inclusion proofs at ``size`` and consistency proofs to ``size``, from ``store.nodes``."""
    plans = [merkle.inclusion_plan(i, size) for i in indices]
    plans += [merkle.consistency_plan(s, size) for s in sizes]
    wanted = {n for plan in plans for el in plan for n in el}
    wanted.update(merkle.subtree_nodes(0, size))
    got = await store.nodes(wanted)
    out = [merkle.fold([got[n] for n in merkle.subtree_nodes(0, size)])]
    out += [merkle.fold([got[n] for n in el]) for plan in plans for el in plan]
    return out


def expected_proofs(
    tree: merkle.MerkleTree, size: int, indices: list[int], sizes: list[int]
) -> list[bytes]:
    out = [tree.root(size)]
    for i in indices:
        out += tree.inclusion_proof(i, size)
    for s in sizes:
        out += tree.consistency_proof(s, size)
    return out


@pytest.fixture
def key(tmp_path: Path) -> DeviceKey:
    return create_device_key(tmp_path / "device.key")


# --- migration -------------------------------------------------------------------


async def test_a_v1_store_migrates_after_a_checked_backup(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "log.sqlite"
    entries = [entry(i) for i in range(3_000)]
    tree = make_v1_store(db, entries, [700, 2_048, 3_000])
    version, v1_rows, v1_levels = node_rows(db)
    assert (version, v1_levels) == ("1", set(range(12)))
    indices, sizes = [0, 1, 255, 256, 699, 2_047, 2_999], [1, 255, 700, 2_048, 2_999]
    want = expected_proofs(tree, 3_000, indices, sizes)

    async with Store(db, readonly=True) as store:  # a read-only open leaves v1 alone
        assert store.schema_version == 1
        assert await proofs(store, 3_000, indices, sizes) == want
    assert node_rows(db)[0] == "1"
    assert not (db.parent / "log.sqlite.v1-backup").exists()

    with caplog.at_level(logging.INFO, logger="gateway.store"):
        async with Store(db) as store:
            # Migrated as far as a migration goes: version 4's index is for new stores.
            assert store.schema_version == 3 == SCHEMA_VERSION - 1
            assert await proofs(store, 3_000, indices, sizes) == want
            assert [c.root for c in await store.checkpoints()] == [
                tree.root(s) for s in (700, 2_048, 3_000)
            ]
    assert "from schema version 1 to 2" in caplog.text
    assert "3,000 leaf hashes give the root of checkpoint 3000" in caplog.text

    version, v2_rows, v2_levels = node_rows(db)
    assert (version, v2_levels) == ("3", {0, 8})  # and on to 3 (test_store_sensors.py)
    assert v2_rows == 3_000 + 3_000 // 256
    # The backup is the version 1 database, whole and sound, in one file.
    backup = db.parent / "log.sqlite.v1-backup"
    assert node_rows(backup) == ("1", v1_rows, v1_levels)
    with sqlite3.connect(backup) as b:
        assert b.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert b.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    b.close()
    assert not (db.parent / "log.sqlite.v1-backup.tmp").exists()

    async with Store(db) as store:  # a second open has nothing to do
        assert await proofs(store, 3_000, indices, sizes) == want


async def test_a_migrated_log_grows_on(tmp_path: Path, key: DeviceKey) -> None:
    db = tmp_path / "log.sqlite"
    entries = [entry(i) for i in range(600)]
    tree = make_v1_store(db, entries, [600], key)
    async with Store(db) as store:
        log = Log(store, key)
        await log.open()
        assert (log.size, log.root()) == (600, tree.root())
        await log.append([Event("boot", time.time_ns(), {}) for _ in range(100)], checkpoint=True)
        rows = [r.data async for r in store.entries(0, 699)]
        assert log.root() == merkle.MerkleTree(rows).root()
        assert await store.tile(0, 2, 700 - 512) == b"".join(
            merkle.leaf_hash(e) for e in rows[512:]
        )


@pytest.mark.parametrize(
    ("corruption", "message"),
    [
        pytest.param(
            "UPDATE nodes SET hash = zeroblob(32) WHERE level = 0 AND idx = 5",
            "the root of checkpoint 600 recomputed from its leaf hashes is",
            id="leaf",
        ),
        pytest.param(
            "UPDATE nodes SET hash = zeroblob(32) WHERE level = 8 AND idx = 1",
            "the stored hashes of tree level 8 are not what its leaf hashes give",
            id="tile-level",
        ),
        pytest.param(
            "DELETE FROM nodes WHERE level = 0 AND idx = 300",
            "lacks leaf hashes from 256",
            id="hole",
        ),
    ],
)
async def test_a_v1_store_whose_copy_fails_its_check_is_left_alone(
    tmp_path: Path, corruption: str, message: str
) -> None:
    db = tmp_path / "log.sqlite"
    make_v1_store(db, [entry(i) for i in range(700)], [600])
    with sqlite3.connect(db) as raw:
        raw.execute(corruption)
    raw.close()
    before = node_rows(db)
    with pytest.raises(StoreError, match=message):
        async with Store(db):
            pass
    assert node_rows(db) == before
    assert not (db.parent / "log.sqlite.v1-backup").exists()
    assert not (db.parent / "log.sqlite.v1-backup.tmp").exists()


_KILL_BEFORE_COMMIT = kill_before_commit("DELETE FROM nodes")


async def test_the_migration_is_one_transaction_even_if_killed(tmp_path: Path) -> None:
    db = tmp_path / "log.sqlite"
    entries = [entry(i) for i in range(5_000)]
    tree = make_v1_store(db, entries, [5_000])
    before = node_rows(db)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _KILL_BEFORE_COMMIT, str(db), cwd=Path(__file__).parents[2]
    )
    assert await proc.wait() == -9
    # Killed after the DELETE, before COMMIT: the live file is still the whole v1 database.
    assert node_rows(db) == before
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    raw.close()
    async with Store(db) as store:  # and the next open migrates it
        assert store.schema_version == 3
        assert await proofs(store, 5_000, [4_999], [1_000]) == expected_proofs(
            tree, 5_000, [4_999], [1_000]
        )
    assert node_rows(db)[0] == "3"


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "log.sqlite"
    async with Store(db):
        pass
    with sqlite3.connect(db) as raw:
        raw.execute(f"UPDATE meta SET value = '{SCHEMA_VERSION + 1}' WHERE key = 'schema_version'")
    raw.close()
    for readonly in (False, True):
        with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}"):
            async with Store(db, readonly=readonly):
                pass


# --- tiles from the store ----------------------------------------------------------


class Expected:
    """TileBuilder over the same leaves: every tile and entry bundle at each size."""

    def __init__(self) -> None:
        self.builder = TileBuilder()
        self.full: dict[TileRef, bytes] = {}
        self.entries: list[bytes] = []

    def add(self, entries: list[bytes]) -> None:
        for e in entries:
            self.builder.append(merkle.leaf_hash(e))
        self.entries += entries
        self.full.update((TileRef(lv, i), t) for lv, i, t in self.builder.take_full_tiles())

    def tiles(self) -> dict[TileRef, bytes]:
        return {**self.full, **dict(self.builder.partials())}


async def check_tiles(store: Store, want: Expected) -> None:
    size = len(want.entries)
    tiles = want.tiles()
    assert set(tiles_for(size)) == set(tiles)
    for ref, data in tiles.items():
        assert await store.tile(ref.level, ref.index, ref.width) == data, ref
        if ref.level == 0:
            first = ref.index * 256
            bundle = await store.entry_bundle(ref.index, ref.width)
            assert bundle == encode_entry_bundle(want.entries[first : first + ref.width])
            hashes = [merkle.leaf_hash(e) for e in decode_entry_bundle(bundle, ref.width)]
            assert hashes == split_hashes(data, str(ref))
    # One hash or entry beyond the tree: StoreError, never a short tile.
    for tile, _ in want.builder.partials():
        with pytest.raises(StoreError, match="the tree has only"):
            await store.tile(tile.level, tile.index, tile.width + 1)
    with pytest.raises(StoreError, match="the tree has only"):
        await store.tile(0, size // 256 + 1, 1)
    with pytest.raises(StoreError, match="the log has only"):
        await store.entry_bundle(size // 256, size % 256 + 1)


async def test_tiles_and_entry_bundles_equal_the_tile_builders(
    tmp_path: Path, key: DeviceKey
) -> None:
    want = Expected()
    async with Store(tmp_path / "log.sqlite") as store:
        log = Log(store, key)
        await log.open()
        for size in (1, 255, 256, 257, 65_536, 70_000):
            while log.size < size:
                n = min(size - log.size, 2_000)
                await log.append([Event("tick", time.time_ns(), {"n": i}) for i in range(n)])
            want.add([r.data async for r in store.entries(len(want.entries), size - 1)])
            await check_tiles(store, want)
            assert want.builder.root() == log.root()
        levels = {n.level for n in await store.nodes(merkle.subtree_nodes(0, log.size))}
        assert levels == {16, 12, 8, 6, 5, 4}  # 70,000 = 2^16 + 2^12 + 2^8 + 2^6 + 2^5 + 2^4
        # Only the tile levels are stored: 70,000 leaves (in their own table since schema
        # 4), 273 level-8 and one level-16 hash.
        cur = await store.db.execute("SELECT level, COUNT(*) FROM nodes GROUP BY level")
        assert sorted(await cur.fetchall()) == [(8, 273), (16, 1)]
        cur = await store.db.execute("SELECT COUNT(*), MIN(idx), MAX(idx) FROM leaves")
        assert await cur.fetchone() == (70_000, 0, 69_999)


async def test_any_node_folds_from_the_tile_levels(tmp_path: Path) -> None:
    db = tmp_path / "log.sqlite"
    entries = [entry(i) for i in range(5_000)]
    make_v1_store(db, entries, [5_000])
    leaves = [merkle.leaf_hash(e) for e in entries]
    async with Store(db) as store:
        wanted = [Node(lv, i) for lv in range(13) for i in range(5_000 >> lv)]
        got = await store.nodes(wanted)
        for n in wanted:
            assert got[n] == perfect_root(leaves[n.index << n.level : (n.index + 1) << n.level])
        with pytest.raises(StoreError, match="missing subtree hashes"):
            await store.nodes([Node(3, 625)])  # leaves 5,000–5,007: not in the log
