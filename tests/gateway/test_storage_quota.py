"""``[storage] quota_mb``: warnings at 80 % and 95 %, back-pressure at the quota, no corruption.

The ingest writer of a real log (SQLite in a temporary data directory, the device key,
the Log) takes readings until the data directory reaches a 1 MiB quota: it warns on the
way, then refuses whole batches unwritten (the submitter gets StorageRefused, so a driver
does not acknowledge), counts the refused readings, and writes nothing more. Raised, the
quota lets it resume by itself: a ``storage-full`` gap first, from the sensor's last
covered instant, then the readings.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
import time
from pathlib import Path

import pytest

from gateway.config import LogConfig, StorageConfig
from gateway.errors import CorruptDatabase, StorageRefused, StoreError
from gateway.ingest import Ingest
from gateway.keys import create_device_key
from gateway.log import Log
from gateway.pipeline import Reading, Value
from gateway.storage import STORAGE_FULL, StorageGuard, level, limit_bytes
from gateway.store import Store, store_error

MB = 1024 * 1024


@pytest.mark.parametrize(
    ("code", "kind", "state"),
    [
        (13, StorageRefused, "full"),  # SQLITE_FULL
        (778, StorageRefused, "io-error"),  # SQLITE_IOERR_WRITE
        (10, StorageRefused, "io-error"),  # SQLITE_IOERR
        (11, CorruptDatabase, None),  # SQLITE_CORRUPT
        (26, CorruptDatabase, None),  # SQLITE_NOTADB
        (5, StoreError, None),  # SQLITE_BUSY: neither
    ],
)
def test_sqlite_errors_map_to_what_the_daemon_does_about_them(
    code: int, kind: type[StoreError], state: str | None
) -> None:
    exc = sqlite3.OperationalError("boom")
    exc.sqlite_errorcode = code
    got = store_error("committing entries", exc, Path("/data/log.sqlite"))
    assert type(got) is kind
    assert getattr(got, "state", None) == state
    assert "/data/log.sqlite" in str(got)


def test_levels_and_limits() -> None:
    assert level(0, 100) == "ok"
    assert level(79, 100) == "ok"
    assert level(80, 100) == "warning"
    assert level(95, 100) == "critical"
    assert level(100, 100) == "full"
    assert level(5, 0) == "full"
    assert limit_bytes(StorageConfig(quota_mb=3), used=10, free=0) == 3 * MB
    # No quota: what it uses plus the free space, less the reserve (never below its use).
    assert limit_bytes(StorageConfig(reserve_mb=1), used=10, free=5 * MB) == 10 + 4 * MB
    assert limit_bytes(StorageConfig(reserve_mb=8), used=10, free=5 * MB) == 10


async def test_the_quota_warns_then_refuses_unwritten_then_resumes_with_a_gap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.storage")
    data = tmp_path / "data"
    data.mkdir()
    key = create_device_key(tmp_path / "device.key")
    guard = StorageGuard(StorageConfig(quota_mb=1, retry_max_seconds=0.2), data)
    guard.watched = {"ph-1"}
    async with Store(data / "log.sqlite") as store:
        log_ = Log(store, key)
        await log_.open()
        ingest = Ingest(log_, LogConfig(max_batch=20), storage=guard)
        writer = asyncio.create_task(ingest.run())
        taken = 0
        refused: StorageRefused | None = None
        t = time.time_ns()
        while refused is None and taken < 20_000:
            batch = [
                Reading("ph-1", (Value("ph", 7.0, "pH"),), t + (taken + i) * 1000, raw="x" * 300)
                for i in range(20)
            ]
            results = await asyncio.gather(
                *(ingest.submit(r) for r in batch), return_exceptions=True
            )
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                assert all(isinstance(e, StorageRefused) for e in errors), errors
                first = errors[0]
                assert isinstance(first, StorageRefused)
                refused = first
                # A batch is refused whole, never half written.
                assert len(errors) == len(batch)
            taken += len(batch) - len(errors)
        assert refused is not None, "the quota never refused a reading"
        assert refused.state == "full" and "quota_mb = 1" in str(refused)
        assert guard.state == "full" and guard.refusing
        levels = [r.getMessage() for r in caplog.records if "of its limit" in r.getMessage()]
        assert any(m.endswith(": warning") for m in levels), levels
        assert any(m.endswith(": critical") for m in levels), levels
        # At the quota, nothing more is written: the log holds what was acknowledged.
        assert await store.size() == taken
        used = sum(f.stat().st_size for f in data.iterdir() if f.is_file())
        assert used <= 1 * MB + 64 * 1024  # at most one batch over
        with pytest.raises(StorageRefused):
            await ingest.submit(Reading("ph-1", (Value("ph", 7.0, "pH"),), time.time_ns()))
        assert ingest.rejected[("ph-1", STORAGE_FULL)] >= 21
        assert guard.to_json()["state"] == "full"
        assert guard.summary() == "storage full: readings refused"

        # More room: the writer tries again by itself and takes readings again.
        guard.config = dataclasses.replace(guard.config, quota_mb=4)
        deadline = time.monotonic() + 10
        while guard.retry_in() is not None:  # refusing, or its gaps not written yet
            assert time.monotonic() < deadline, "the writer did not try the storage again"
            await asyncio.sleep(0.05)
        assert await ingest.submit(Reading("ph-1", (Value("ph", 7.1, "pH"),), time.time_ns()))
        recs = [await store.record(i) for i in range(taken, await store.size())]
        await ingest.close()
        await writer
    assert recs[0] is not None and recs[0]["kind"] == "gap"
    assert recs[0]["reason"] == STORAGE_FULL and recs[0]["sensor"] == "ph-1"
    assert recs[1] is not None and recs[1]["kind"] == "reading"
    assert guard.state in ("ok", "warning") and guard.since_ns is None
    with sqlite3.connect(data / "log.sqlite") as c:
        assert c.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
