"""Store schema version 3: the ``sensors`` table against a scan of the entries, and the
migration from version 2 (index entries_sensor_seq → sensors table), kill -9 included;
and where the daemon writes status.json (gateway/daemon.py ``status_file``)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.daemon import status_file
from gateway.keys import DeviceKey, create_device_key
from gateway.log import Event, Log
from gateway.pipeline import Gap, Reading, Value
from gateway.store import SCHEMA_VERSION, Store, decode_data
from ledger_client.records import format_time, parse_entry, parse_time
from tests.gateway.migration_kill import kill_before_commit

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T0 = 1_700_000_000 * 10**9


@pytest.fixture
def key(tmp_path: Path) -> DeviceKey:
    return create_device_key(tmp_path / "device.key")


def reading(sensor: str, n: int, sensor_ns: int) -> Reading:
    """Reading ``n`` of ``sensor``, keyed as the MQTT driver keys JSON payloads."""
    when = format_time(sensor_ns)
    return Reading(
        sensor,
        (Value("ph", 7 + n / 1000, "pH"),),
        sensor_ns,  # the record's time
        sensor_time=when,
        src_seq=n,
        dedup_key=f"src_seq:{n}@{when}",
    )


def batches() -> list[list[Reading | Gap | Event]]:
    """Four sensors in batches: c's last record is not its latest instant (a reading
    with an older time: the clock stepped back), b's is a gap, d has a gap only."""
    out: list[list[Reading | Gap | Event]] = []
    for b in range(12):
        batch: list[Reading | Gap | Event] = [Event("tick", T0 + b, {})]
        for n in range(b * 5, b * 5 + 5):
            for s, step in (("a", 1), ("b", 2), ("c", 3)):
                batch.append(reading(s, n, T0 + n * step * 10**9))
        if b == 9:
            batch.append(reading("c", 999, T0 + 10**9))  # late, with an old time
        out.append(batch)
    out.append(
        [
            Gap("b", "sensor silent", T0 + 118 * 10**9, T0 + 130 * 10**9),
            Gap("d", "gateway down", T0, T0 + 7 * 10**9),  # a sensor with a gap only
        ]
    )
    return out


def scanned(path: Path) -> dict[str, tuple[int, int, int | None]]:
    """sensor → (newest seq, its index, latest reading time or gap end), from every entry."""
    out: dict[str, tuple[int, int, int | None]] = {}
    with sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT idx, data FROM entries ORDER BY idx").fetchall()
    db.close()
    for idx, data in rows:
        e = parse_entry(decode_data(data))
        if e.sensor is None or e.seq is None:
            continue
        instant = e.rec.get("time") if e.kind == "reading" else e.rec.get("to")
        ns = (parse_time(str(instant)) - _EPOCH) // timedelta(microseconds=1) * 1000
        seq, at, best = out.get(e.sensor, (e.seq, idx, ns))
        if e.seq >= seq:
            seq, at = e.seq, idx
        out[e.sensor] = (seq, at, max(best, ns) if best is not None else ns)
    return out


async def fill(path: Path, key: DeviceKey) -> None:
    async with Store(path) as store:
        log = Log(store, key)
        await log.open()
        for batch in batches():
            await log.append(batch, checkpoint=True)


def schema(path: Path) -> tuple[str, set[str], set[str]]:
    """(schema_version, index names, table names) read behind the store's back."""
    with sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True) as db:
        version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        objects = db.execute("SELECT type, name FROM sqlite_master").fetchall()
    db.close()
    return (
        str(version),
        {str(n) for t, n in objects if t == "index" and not str(n).startswith("sqlite_")},
        {str(n) for t, n in objects if t == "table"},
    )


def make_v3(path: Path) -> None:
    """Turn a version 4 file into the version 3 file riverseal made before: no ``dkey``
    column, the unique dedup index on the key text led by the node time, level-0 hashes
    in ``nodes`` and an index on time_ns."""
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            DROP INDEX entries_dkey;
            ALTER TABLE entries DROP COLUMN dkey;
            INSERT INTO nodes SELECT 0, idx, hash FROM leaves;
            DROP TABLE leaves;
            CREATE INDEX entries_time ON entries (time_ns);
            CREATE UNIQUE INDEX entries_dedup ON entries
                (substr(dedup, instr(dedup, '@') + 1), sensor, dedup) WHERE dedup IS NOT NULL;
            UPDATE meta SET value = '3' WHERE key = 'schema_version';
            """
        )
    db.close()


def make_v2(path: Path) -> None:
    """Turn a version 4 file into the version 2 file riverseal made before: the index on
    (sensor, seq), the dedup index on (sensor, dedup), no sensors table."""
    make_v3(path)
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            DROP TABLE sensors;
            DROP INDEX entries_dedup;
            CREATE UNIQUE INDEX entries_dedup ON entries (sensor, dedup) WHERE dedup IS NOT NULL;
            CREATE INDEX entries_sensor_seq ON entries (sensor, seq) WHERE sensor IS NOT NULL;
            UPDATE meta SET value = '2' WHERE key = 'schema_version';
            """
        )
    db.close()


async def answers(store: Store) -> tuple[dict[str, int], dict[str, int | None]]:
    seqs = await store.last_seqs()
    return seqs, {s: await store.covered_until(s) for s in [*sorted(seqs), "nobody"]}


def expected(path: Path) -> tuple[dict[str, int], dict[str, int | None]]:
    scan = scanned(path)
    covered: dict[str, int | None] = {s: c for s, (_, _, c) in sorted(scan.items())}
    return {s: q for s, (q, _, _) in scan.items()}, {**covered, "nobody": None}


async def test_the_sensors_table_answers_what_a_scan_finds(tmp_path: Path, key: DeviceKey) -> None:
    db = tmp_path / "log.sqlite"
    await fill(db, key)
    scan = scanned(db)
    assert sorted(scan) == ["a", "b", "c", "d"]
    # The cases the batches were built for.
    assert scan["c"][2] == T0 + 59 * 3 * 10**9
    assert scan["b"][2] == T0 + 130 * 10**9
    assert scan["d"] == (0, scan["d"][1], T0 + 7 * 10**9)
    async with Store(db) as store:
        assert store.schema_version == SCHEMA_VERSION == 4
        assert await store.sensor_rows() == scan
        assert await answers(store) == expected(db)
    version, indexes, tables = schema(db)
    assert version == "4"
    assert "entries_sensor_seq" not in indexes and "sensors" in tables


@pytest.mark.parametrize("version", [4, 3])
async def test_dedup_still_refuses_a_key_already_logged(
    tmp_path: Path, key: DeviceKey, version: int
) -> None:
    db = tmp_path / "log.sqlite"
    await fill(db, key)
    if version == 3:
        make_v3(db)
    again = reading("a", 3, T0 + 3 * 10**9)
    async with Store(db) as store:
        assert store.schema_version == version
        log = Log(store, key)
        await log.open()
        size = log.size
        fresh = reading("a", 3, T0 + 4 * 10**9)  # same seq, another time: not a duplicate
        assert await log.append([again, fresh, fresh]) == [None, size, None]
        assert await store.existing_dedup([("a", str(again.dedup_key)), ("b", "x@1")]) == {
            ("a", str(again.dedup_key))
        }
    if version == 3:
        with sqlite3.connect(db) as raw, pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            raw.execute(  # version 3's index itself refuses it too
                "INSERT INTO entries VALUES (?, 'reading', 'a', 999, 0, ?, x'00')",
                (size + 1, again.dedup_key),
            )
        raw.close()


async def test_a_v2_store_migrates_with_the_same_answers(
    tmp_path: Path, key: DeviceKey, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "log.sqlite"
    await fill(db, key)
    make_v2(db)
    want = expected(db)
    assert schema(db)[0] == "2" and "entries_sensor_seq" in schema(db)[1]

    async with Store(db, readonly=True) as store:  # a read-only open leaves v2 alone
        assert store.schema_version == 2
        assert await answers(store) == want
    assert schema(db)[0] == "2"

    with caplog.at_level(logging.WARNING, logger="gateway.store"):
        async with Store(db) as store:
            assert store.schema_version == 3
            assert await answers(store) == want
            assert await store.sensor_rows() == scanned(db)
            log = Log(store, key)
            await log.open()
            # The old dedup index is kept and still finds duplicates; the log grows on.
            dup, new = reading("a", 0, T0), reading("a", 1000, T0 + 2000 * 10**9)
            size = log.size
            assert await log.append([dup, new]) == [None, size]
            assert (await store.last_seqs())["a"] == want[0]["a"] + 1
            assert await store.covered_until("a") == T0 + 2000 * 10**9
    assert "from schema version 2 to 3: 4 sensors" in caplog.text
    version, indexes, tables = schema(db)
    assert (version, "sensors" in tables) == ("3", True)
    assert indexes == {"entries_dedup", "entries_time", "anchors_by_backend", "anchors_open"}
    assert await_sound(db)


def await_sound(path: Path) -> bool:
    with sqlite3.connect(path) as raw:
        ok = raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    raw.close()
    return ok


_KILL_BEFORE_COMMIT = kill_before_commit("DROP INDEX entries_sensor_seq")


async def test_a_migration_killed_before_its_commit_leaves_v2(
    tmp_path: Path, key: DeviceKey
) -> None:
    db = tmp_path / "log.sqlite"
    await fill(db, key)
    make_v2(db)
    want, before = expected(db), schema(db)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _KILL_BEFORE_COMMIT, str(db), cwd=Path(__file__).parents[2]
    )
    assert await proc.wait() == -9
    # Killed after the DROP INDEX, before COMMIT: the file is still the whole v2 database.
    assert schema(db) == before
    assert await_sound(db)
    async with Store(db) as store:  # and the next open migrates it
        assert store.schema_version == 3
        assert await answers(store) == want
    assert schema(db)[0] == "3" and "entries_sensor_seq" not in schema(db)[1]


# --- status.json off the SD card ---------------------------------------------------


def test_status_json_goes_to_the_runtime_directory_with_a_link(tmp_path: Path) -> None:
    data, run = tmp_path / "data", tmp_path / "run"
    data.mkdir()
    run.mkdir()
    (data / "status.json").write_text("{}")  # left by a daemon run outside systemd
    assert status_file(data, {}) == data / "status.json"
    target = status_file(data, {"RUNTIME_DIRECTORY": f"{run}:{tmp_path / 'other'}"})
    assert target == run / "status.json"
    assert (data / "status.json").is_symlink()
    assert (data / "status.json").readlink() == target
    target.write_text('{"pid": 1}')
    assert (data / "status.json").read_text() == '{"pid": 1}'  # readers find it there
    assert status_file(data, {"RUNTIME_DIRECTORY": str(run)}) == target  # the link stays
    assert not (data / "status.link").exists()
