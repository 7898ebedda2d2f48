"""Store schema version 4: duplicates found through ``dkey`` (``dedup_number``), a number
that only names candidates; the row's own sensor and key decide."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from gateway import store as store_module
from gateway.keys import DeviceKey, create_device_key
from gateway.log import Event, Log
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


# --- entry times without an index (leaves.top) --------------------------------------


def stamped(times_s: list[int]) -> list[list[Event]]:
    """One batch per three entries, each stamped (received) at T0 + the given seconds."""
    events = [Event("tick", T0 + t * 10**9, {"n": n}) for n, t in enumerate(times_s)]
    return [events[i : i + 3] for i in range(0, len(events), 3)]


async def answers(store: Store, probes: list[int]) -> list[object]:
    out: list[object] = [await store.newest_entry_time()]
    for p in probes:
        out.append(await store.first_entry_at_or_after(T0 + p * 10**9))
        for q in probes:
            if q >= p:
                out.append(await store.index_range(T0 + p * 10**9, T0 + q * 10**9))
        out.append(await store.index_range(T0 + p * 10**9, None))
        out.append(await store.index_range(None, T0 + p * 10**9))
    return out


async def logged(db: Path, key: DeviceKey, times_s: list[int]) -> None:
    async with Store(db) as store:
        log = Log(store, key)
        await log.open()
        for batch in stamped(times_s):
            await log.append(batch)


async def test_time_questions_answer_as_the_time_index_did(tmp_path: Path, key: DeviceKey) -> None:
    times = [0, 0, 1, 5, 5, 5, 9, 12, 12, 20, 21, 30, 31, 31, 40]  # never stepping back
    probes = [-1, 0, 1, 3, 5, 6, 12, 13, 31, 40, 41]
    new, old = tmp_path / "new.sqlite", tmp_path / "old.sqlite"
    for db in (new, old):
        await logged(db, key, times)
    make_v3(old)
    async with Store(new) as v4, Store(old) as v3:  # reopened: top is read back
        assert (v4.schema_version, v3.schema_version) == (4, 3)
        want = await answers(v3, probes)
        assert await answers(v4, probes) == want
    assert want[0] == T0 + 40 * 10**9 and want[1] == 0


async def test_after_a_backward_step_a_window_still_holds_every_entry_stamped_inside(
    tmp_path: Path, key: DeviceKey
) -> None:
    db = tmp_path / "log.sqlite"
    async with Store(db) as store:
        log = Log(store, key)
        await log.open()
        for batch in stamped([10, 11, 12, 20, 21, 5, 6, 22, 23]):  # stepped back at 21 → 5
            await log.append(batch)
        assert await store.newest_entry_time() == T0 + 23 * 10**9
        assert await store.first_entry_at_or_after(T0 + 5 * 10**9) == 0
        assert await store.first_entry_at_or_after(T0 + 21 * 10**9) == 4
        assert await store.first_entry_at_or_after(T0 + 22 * 10**9) == 7
        assert await store.first_entry_at_or_after(T0 + 24 * 10**9) is None
        # As the time index answered: the span from the first to the last entry stamped
        # inside the window, wherever the step put them.
        assert await store.index_range(T0, T0 + 15 * 10**9) == (0, 6)
        assert await store.index_range(T0 + 5 * 10**9, T0 + 6 * 10**9) == (5, 6)
        assert await store.index_range(T0 + 13 * 10**9, T0 + 19 * 10**9) is None
        assert await store.index_range(T0 + 21 * 10**9, None) == (4, 8)
        assert await store.index_range(T0 + 24 * 10**9, None) is None
