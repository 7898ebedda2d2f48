"""Store schema version 4: duplicates found through ``dkey`` (``dedup_number``), a number
that only names candidates; the row's own sensor and key decide."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from gateway import store as store_module
from gateway.keys import DeviceKey, create_device_key
from gateway.log import Log
from gateway.store import Store, dedup_number
from tests.gateway.test_store_sensors import T0, make_v3, reading, schema


@pytest.fixture
def key(tmp_path: Path) -> DeviceKey:
    return create_device_key(tmp_path / "device.key")


def test_a_dedup_number_is_the_node_time_digits_then_a_hash_of_sensor_and_key() -> None:
    d = "src_seq:14@2026-12-06T04:51:41.026716Z"
    tag = hashlib.blake2b(b"n1\x00" + d.encode(), digest_size=2).digest()
    assert dedup_number("n1", d) == 20261206045141 << 16 | int.from_bytes(tag, "big")
    # SenML keys have no "@": their digits are taken from the start.
    assert dedup_number("s", "senml:2026-12-06T04:51:41Z:ph") >> 16 == 20261206045141
    # Short or digit-less keys still give a number, below 2**63 like every other.
    assert dedup_number("s", "7") >> 16 == 70_000_000_000_000
    assert dedup_number("s", "no digits") >> 16 == 0
    assert dedup_number("s", "@" + "9" * 40) < 2**63
    # Time first: keys arriving together sort together.
    assert dedup_number("z", "src_seq:1@2026-12-06T04:51:41Z") < dedup_number(
        "a", "src_seq:1@2026-12-06T04:51:42Z"
    )


async def test_a_new_store_indexes_the_number_not_the_text(tmp_path: Path, key: DeviceKey) -> None:
    db = tmp_path / "log.sqlite"
    async with Store(db) as store:
        log = Log(store, key)
        await log.open()
        await log.append([reading("a", n, T0 + n * 10**9) for n in range(5)])
    version, indexes, _ = schema(db)
    assert version == "4"
    assert "entries_dkey" in indexes and "entries_dedup" not in indexes
    with sqlite3.connect(db) as raw:
        rows = raw.execute("SELECT sensor, dedup, dkey FROM entries WHERE dedup IS NOT NULL")
        assert [k == dedup_number(s, d) for s, d, k in rows] == [True] * 5
    raw.close()


async def test_equal_numbers_never_make_a_duplicate_of_another_key(
    tmp_path: Path, key: DeviceKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "dedup_number", lambda sensor, dedup: 7)  # all collide
    async with Store(tmp_path / "log.sqlite") as store:
        log = Log(store, key)
        await log.open()
        first = [reading(s, n, T0 + n * 10**9) for s in ("a", "b") for n in range(3)]
        assert await log.append(first) == list(range(6))
        again = reading("b", 1, T0 + 1 * 10**9)
        other = reading("c", 1, T0 + 1 * 10**9)  # b's key, another sensor
        assert await log.append([again, other]) == [None, 6]
        assert await store.existing_dedup(
            [("a", str(first[0].dedup_key)), ("a", "src_seq:9@x"), ("c", str(other.dedup_key))]
        ) == {("a", str(first[0].dedup_key)), ("c", str(other.dedup_key))}


async def test_a_version_3_store_keeps_its_layout_and_grows(tmp_path: Path, key: DeviceKey) -> None:
    db = tmp_path / "log.sqlite"
    async with Store(db) as store:
        log = Log(store, key)
        await log.open()
        await log.append([reading("a", n, T0 + n * 10**9) for n in range(3)])
    make_v3(db)
    async with Store(db) as store:
        assert store.schema_version == 3
        log = Log(store, key)
        await log.open()
        size = log.size
        assert await log.append([reading("a", 2, T0 + 2 * 10**9), reading("a", 3, T0)]) == [
            None,
            size,
        ]
    version, indexes, _ = schema(db)
    assert version == "3" and "entries_dedup" in indexes and "entries_dkey" not in indexes
