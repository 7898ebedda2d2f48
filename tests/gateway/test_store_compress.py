"""Entry bodies stored deflated: new rows shrink, old raw rows and pruned rows read as
they are, and leaf hashes, hash tiles and entry bundles stay over the original bytes."""

from __future__ import annotations

import sqlite3
import zlib
from pathlib import Path

import pytest

from gateway.errors import StoreError
from gateway.keys import DeviceKey, create_device_key
from gateway.log import Event, Log
from gateway.pipeline import Reading, Value
from gateway.store import Store, decode_data, encode_data
from ledger_client import merkle
from ledger_client.records import format_time, parse_entry
from ledger_client.tiles import TILE_WIDTH, encode_entry_bundle

T0 = 1_700_000_000 * 10**9


@pytest.fixture
def key(tmp_path: Path) -> DeviceKey:
    return create_device_key(tmp_path / "device.key")


def reading(sensor: str, n: int) -> Reading:
    when = format_time(T0 + n * 10**9)
    return Reading(
        sensor,
        (Value("ph", 7 + n / 1000, "pH"),),
        T0 + n * 10**9,
        sensor_time=when,
        src_seq=n,
        dedup_key=f"src_seq:{n}@{when}",
    )


def raw_rows(path: Path) -> list[bytes]:
    """The ``data`` column as stored, read behind the store's back."""
    with sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True) as db:
        rows = [bytes(d) for (d,) in db.execute("SELECT data FROM entries ORDER BY idx")]
    db.close()
    return rows


async def make_log(path: Path, key: DeviceKey, readings: int) -> None:
    async with Store(path) as store:
        log = Log(store, key)
        await log.open()
        for b in range(0, readings, 50):
            batch: list[Reading | Event] = [reading(f"n{n % 7}", n) for n in range(b, b + 50)]
            await log.append(batch, checkpoint=True)


async def test_new_rows_are_deflated_and_hashed_over_their_original_bytes(
    tmp_path: Path, key: DeviceKey
) -> None:
    db = tmp_path / "log.sqlite"
    await make_log(db, key, 300)
    stored = raw_rows(db)
    entries = [decode_data(d) for d in stored]
    readings = [(s, e) for s, e in zip(stored, entries, strict=True) if b'"reading"' in e]
    assert len(readings) == 300
    for s, e in readings:
        assert s[:1] == b"\x02" and e[:1] == b"{"
        assert len(s) < len(e) * 0.5, (len(s), len(e))
        assert parse_entry(e).kind == "reading"  # the signed record, whole
    tree = merkle.MerkleTree(entries)
    async with Store(db, readonly=True) as store:
        size = len(entries)
        cp = await store.latest_checkpoint()
        assert cp is not None and cp.size == size and cp.root == tree.root()
        assert await store.tile(0, 0) == b"".join(tree.leaf(i) for i in range(TILE_WIDTH))
        assert await store.entry_bundle(0) == encode_entry_bundle(entries[:TILE_WIDTH])
        rest = size - TILE_WIDTH
        assert await store.entry_bundle(1, rest) == encode_entry_bundle(entries[TILE_WIDTH:])
        got = [e.data async for e in store.entries(0, size - 1)]
        assert got == entries
        rec = await store.record(size - 1)
        assert rec == parse_entry(entries[-1]).rec
    # The leaf is the original bytes' hash, not the stored bytes'.
    assert tree.leaf(5) == merkle.leaf_hash(entries[5]) != merkle.leaf_hash(stored[5])


async def test_old_raw_rows_and_pruned_rows_read_as_before(tmp_path: Path, key: DeviceKey) -> None:
    db = tmp_path / "log.sqlite"
    await make_log(db, key, 300)
    entries = [decode_data(d) for d in raw_rows(db)]
    bundle = encode_entry_bundle(entries[:TILE_WIDTH])
    # Rows as an older riverseal wrote them: raw JSON, mixed with deflated ones.
    with sqlite3.connect(db) as c:
        c.executemany(
            "UPDATE entries SET data = ? WHERE idx = ?",
            [(entries[i], i) for i in range(0, TILE_WIDTH, 2)],
        )
    c.close()
    stored = raw_rows(db)
    assert stored[0] == entries[0] and stored[1][:1] == b"\x02"
    async with Store(db) as store:
        assert await store.entry_bundle(0) == bundle
        assert [e.data async for e in store.entries(0, 9)] == entries[:10]
        assert await store.record(0) == parse_entry(entries[0]).rec
        # Retention empties bodies; the rest still inflate.
        assert await store.prune_bodies(0, 100, {"pruned_below": "100"}) == 100
        assert await store.record(50) is None
        with pytest.raises(StoreError, match="pruned by retention"):
            await store.entry_bundle(0)
        with pytest.raises(StoreError, match="pruned by retention"):
            async for _ in store.entries(99, 100):
                pass
        assert [e.data async for e in store.entries(100, 299)] == entries[100:300]
        assert await store.record(299) == parse_entry(entries[299]).rec
    assert raw_rows(db)[:100] == [b""] * 100


def test_encode_keeps_what_does_not_shrink_and_decode_refuses_a_broken_stream() -> None:
    assert encode_data(b'{"a":1}') == b'{"a":1}'  # deflating would only grow it
    assert decode_data(b"") == b""
    body = b'{"rec": {"kind": "reading", "values": [' + b'{"ph": 7.01}, ' * 20 + b"]}}"
    packed = encode_data(body)
    assert packed[:1] == b"\x02" and len(packed) < len(body)
    assert decode_data(packed) == body
    # The first commits of this format wrote deflate without the dictionary: still read.
    assert decode_data(b"\x01" + zlib.compress(body, wbits=-15)) == body
    with pytest.raises(StoreError, match="does not inflate"):
        decode_data(b"\x02\xff\xff\xff\xff")
    with pytest.raises(StoreError, match="cut short"):
        decode_data(packed[:-3])
