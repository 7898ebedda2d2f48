"""The commit window of the ingest writer (gateway/ingest.py), over a real SQLite log.

The window is measured on the writer's injected monotonic clock: the tests
hold that clock still and move it by hand, so what they show does not depend
on how loaded the machine is. What a submitter sees is checked against the
database file through a second connection: a reading is acknowledged (its
``submit`` returns) only once it is committed there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiomqtt
import pytest

from gateway import store as store_module
from gateway.config import LogConfig, MqttConfig, MqttSensorConfig
from gateway.config.core import parse_config
from gateway.drivers.mqtt.source import MqttSource
from gateway.errors import ConfigError
from gateway.ingest import GATHER_TARGET, Ingest
from gateway.keys import create_device_key
from gateway.log import Log
from gateway.pipeline import Event, Reading, Value
from gateway.store import Store


class Clock:
    """A monotonic clock that moves only when the test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def reading(n: int) -> Reading:
    return Reading(f"s{n % 3}", (Value("ph", 7.0, "pH"),), time.time_ns(), dedup_key=str(n))


def committed(db: Path) -> int:
    """Readings a separate connection sees committed."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
        return int(c.execute("SELECT COUNT(*) FROM entries WHERE kind = 'reading'").fetchone()[0])


@contextlib.asynccontextmanager
async def writer(
    tmp_path: Path,
    window: float,
    clock: Clock | None = None,
    hold_limits: dict[str, float] | None = None,
    checkpoint_every_s: float = 60.0,
) -> AsyncIterator[Ingest]:
    key = create_device_key(tmp_path / "device.key")
    async with Store(tmp_path / "log.sqlite") as store:
        log = Log(store, key)
        await log.open()
        ingest = Ingest(
            log,
            LogConfig(commit_window_s=window, checkpoint_every_seconds=checkpoint_every_s),
            monotonic=clock or time.monotonic,
            hold_limits=hold_limits,
        )
        async with asyncio.TaskGroup() as tg:
            tg.create_task(ingest.run(), name="gateway.ingest")
            yield ingest
            await ingest.close()


async def until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_a_lone_reading_waits_the_window_on_the_clock_and_is_acked_after_commit(
    tmp_path: Path,
) -> None:
    clock = Clock()
    db = tmp_path / "log.sqlite"
    async with writer(tmp_path, 0.3, clock) as ingest:
        pending = asyncio.create_task(ingest.submit(reading(1)))
        await asyncio.sleep(0.6)  # twice the window of wall time, none on the writer's clock
        assert not pending.done()
        assert committed(db) == 0
        assert ingest.stats.batches == 0
        clock.now += 0.29
        await asyncio.sleep(0.4)
        assert not pending.done()  # still inside the window
        clock.now += 0.01  # the window has passed since the reading arrived
        assert await asyncio.wait_for(pending, 5) is True
        assert committed(db) == 1  # acknowledged: on disk, seen by another connection
        assert (ingest.stats.batches, ingest.stats.window_expired) == (1, 1)


async def test_an_event_is_committed_at_once_with_what_gathers_before_it(tmp_path: Path) -> None:
    clock = Clock()  # never moves: only the event can close the batch
    db = tmp_path / "log.sqlite"
    async with writer(tmp_path, 10.0, clock) as ingest:
        boot = Event("boot", time.time_ns(), {"cause": "test"})
        await asyncio.wait_for(ingest.submit_event(boot), 5)  # the daemon waits on its boot
        assert ingest.stats.batches == 1
        pending = asyncio.create_task(ingest.submit(reading(1)))
        await asyncio.sleep(0.3)
        assert not pending.done()  # a reading alone gathers
        await asyncio.wait_for(ingest.submit_event(Event("config", time.time_ns())), 5)
        assert await asyncio.wait_for(pending, 5) is True
        assert committed(db) == 1
        assert ingest.stats.window_expired == 0


async def test_a_reading_is_held_no_longer_than_its_sensors_hold_limit(tmp_path: Path) -> None:
    clock = Clock()
    async with writer(tmp_path, 10.0, clock, hold_limits={"s1": 0.5}) as ingest:
        pending = asyncio.create_task(ingest.submit(reading(1)))  # sensor s1
        await asyncio.sleep(0.3)
        clock.now += 0.49
        await asyncio.sleep(0.3)
        assert not pending.done()
        clock.now += 0.02  # half its 1 s interval: the serial driver's next slot is safe
        assert await asyncio.wait_for(pending, 5) is True


async def test_gathering_never_runs_past_a_due_checkpoint(tmp_path: Path) -> None:
    clock = Clock()
    async with writer(tmp_path, 10.0, clock, checkpoint_every_s=1.0) as ingest:
        pending = asyncio.create_task(ingest.submit(reading(1)))
        await asyncio.sleep(0.3)
        clock.now += 0.99
        await asyncio.sleep(0.3)
        assert not pending.done()
        clock.now += 0.02  # a checkpoint is due: the reading goes into it, not after it
        assert await asyncio.wait_for(pending, 5) is True
        assert ingest.stats.checkpoints == 1
        cp = ingest.log.last_checkpoint
        assert cp is not None and cp.size == ingest.log.size


async def test_a_source_that_waits_for_each_commit_is_not_held_a_window_each_time(
    tmp_path: Path,
) -> None:
    # A serial driver (or a publisher with one message in flight) sends its next
    # reading only once the previous one is committed. Only its first reading, when
    # no rate is known, may wait the window; the 30 after it go at the stream's pace.
    async with writer(tmp_path, 1.0) as ingest:
        assert await asyncio.wait_for(ingest.submit(reading(0)), 5) is True
        started = time.monotonic()
        for n in range(1, 31):
            assert await asyncio.wait_for(ingest.submit(reading(n)), 5) is True
        elapsed = time.monotonic() - started
        # One window each would be 30 s; the pause rule gives milliseconds each.
        assert elapsed < 10, f"30 sequential readings took {elapsed:.1f} s"
        assert ingest.stats.window_expired <= 2


async def test_a_burst_inside_the_window_is_one_commit_closed_by_the_pause(
    tmp_path: Path,
) -> None:
    clock = Clock()
    db = tmp_path / "log.sqlite"
    async with writer(tmp_path, 10.0, clock) as ingest:
        pending = []
        for n in range(5):  # arriving one by one while the writer gathers
            pending.append(asyncio.create_task(ingest.submit(reading(n))))
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        assert not any(p.done() for p in pending)
        assert committed(db) == 0
        clock.now += 0.01  # far inside the window, but the stream has paused
        assert await asyncio.wait_for(asyncio.gather(*pending), 5) == [True] * 5
        assert committed(db) == 5
        assert (ingest.stats.batches, ingest.stats.window_expired) == (1, 0)


async def test_a_full_batch_commits_without_waiting(tmp_path: Path) -> None:
    clock = Clock()  # never moves: only the batch's size can close it
    async with writer(tmp_path, 10.0, clock) as ingest:
        pending = []
        for n in range(GATHER_TARGET):
            pending.append(asyncio.create_task(ingest.submit(reading(n))))
            await asyncio.sleep(0.005)
        assert await asyncio.wait_for(asyncio.gather(*pending), 5) == [True] * GATHER_TARGET
        assert ingest.stats.batches == 1
        assert committed(tmp_path / "log.sqlite") == GATHER_TARGET


async def test_a_source_with_few_messages_in_flight_is_not_held_a_window_each_time(
    tmp_path: Path, mosquitto: tuple[str, int]
) -> None:
    """The MQTT source acknowledges at most ``max_inflight`` messages' commits at once;
    then nothing more arrives until they are committed. Waiting out a 1 s window
    each time would take 25 s for 200 messages: the pause rule commits at once."""
    host, port = mosquitto
    topic = "adaptive-commit/inflight"
    total, inflight, window = 200, 8, 1.0
    async with writer(tmp_path, window) as ingest:
        source = MqttSource(
            MqttConfig(host=host, port=port, client_id="adaptive-commit-gw", max_inflight=inflight),
            [MqttSensorConfig(id="node", topic=topic)],
            device_id="d",
        )
        task = asyncio.create_task(source.run(ingest), name="mqtt")
        await until(lambda: source.connected, "the source to connect")
        start = time.monotonic()
        async with aiomqtt.Client(host, port, identifier="adaptive-commit-pub") as pub:
            for seq in range(total):
                body = {
                    "seq": seq,
                    "time": "2026-12-06T03:00:00.000Z",
                    "values": [{"q": "ph", "v": 7.0, "u": "pH"}],
                }
                await pub.publish(topic, json.dumps(body), qos=1)
        await until(lambda: ingest.stats.committed >= total, "every message committed")
        took = time.monotonic() - start
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert ingest.stats.committed == total
    # The limit did bind: the source holds max_inflight + 2 messages at most (one being
    # queued, one being acknowledged), so no commit could gather GATHER_TARGET.
    assert inflight + 2 < GATHER_TARGET
    assert ingest.stats.batches >= total / (inflight + 2)
    assert ingest.stats.window_expired <= 1  # the first arrival knows no rate yet
    assert took < total / inflight * window / 3, f"{took:.1f} s"


def test_commit_window_s_is_configured_within_its_limits(tmp_path: Path) -> None:
    def window(line: str) -> float:
        text = f'[device]\nkey_file = "k"\n[log]\n{line}\n'
        return parse_config(text, tmp_path / "gateway.toml").log.commit_window_s

    assert window("") == LogConfig().commit_window_s == 2.0
    assert window("commit_window_s = 0") == 0.0
    assert window("commit_window_s = 0.25") == 0.25
    for bad in ("-0.1", "5.5"):
        with pytest.raises(ConfigError, match="commit_window_s"):
            window(f"commit_window_s = {bad}")


async def test_no_window_commits_a_lone_reading_at_once(tmp_path: Path) -> None:
    clock = Clock()  # never moves
    async with writer(tmp_path, 0.0, clock) as ingest:
        assert await asyncio.wait_for(ingest.submit(reading(1)), 5) is True
        assert ingest.stats.batches == 1


async def test_a_new_log_has_small_pages_and_an_old_one_keeps_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def pragmas(db: Path) -> tuple[int, int, int]:
        async with Store(db) as store:
            out = []
            for name in ("page_size", "wal_autocheckpoint", "synchronous"):
                cur = await store.db.execute(f"PRAGMA {name}")
                row = await cur.fetchone()
                assert row is not None
                out.append(int(row[0]))
        return out[0], out[1], out[2]

    assert await pragmas(tmp_path / "new.sqlite") == (1024, 4096, 2)  # 2: FULL
    monkeypatch.setattr(store_module, "PAGE_SIZE", 4096)  # made by an older riverseal
    await pragmas(tmp_path / "old.sqlite")
    monkeypatch.undo()
    assert await pragmas(tmp_path / "old.sqlite") == (4096, 1024, 2)  # still a 4 MiB WAL
