"""A damaged log database at start: refused with a clear message and a non-zero exit, never a hang.

One station is made for the module: a real ``gateway run`` starts and stops (its boot and
stop events, a checkpoint, the high-water file beside the key), then 600 readings are
appended through the gateway's own Log so the entries span many pages. Each case copies
that database, damages it the way an SD card or a careless hand does — a page of garbage
inside, a garbage header, the file cut in half, the file deleted — and runs ``gateway
run``, ``gateway export`` and ``gateway status`` on it, each in a subprocess with a 30 s
timeout (a leftover SQLite worker thread would hang one past it). None may exit 0, each
must say what is wrong with which file, and the damaged file must be left as it was
(never repaired or recreated behind the operator's back).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.keys import load_device_key
from gateway.log import Log
from gateway.pipeline import Reading, Value
from gateway.store import Store, header_problem, store_problems
from tests.gateway.daemon_procs import GATEWAY, records, start

_BTREE_PAGE_TYPES = {0x02, 0x05, 0x0A, 0x0D}


@dataclass(frozen=True)
class Station:
    dir: Path
    cfg: Path
    db: Path
    good: Path
    """A sound copy of the database."""


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory) -> Station:
    root = tmp_path_factory.mktemp("corrupt")
    subprocess.run([*GATEWAY, "init", str(root)], check=True, capture_output=True)
    cfg = root / "gateway.toml"
    procs: list[subprocess.Popen[bytes]] = []
    proc = start(cfg, procs)
    try:
        deadline = time.monotonic() + 20
        while not any(r.get("event") == "boot" for r in records(root / "data" / "log.sqlite")):
            assert proc.poll() is None and time.monotonic() < deadline, (
                root / "gateway.log"
            ).read_text()[-2000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    config = load_config(cfg)
    asyncio.run(_append_readings(config.db_path, config.key_file, 600))
    good = root / "good.sqlite"
    shutil.copyfile(config.db_path, good)
    assert not Path(str(config.db_path) + "-wal").exists() or (
        Path(str(config.db_path) + "-wal").stat().st_size == 0
    )
    return Station(root, cfg, config.db_path, good)


async def _append_readings(db: Path, key_file: Path, n: int) -> None:
    async with Store(db) as store:
        log_ = Log(store, load_device_key(key_file))
        await log_.open()
        t = time.time_ns()
        items = [
            Reading("ph-1", (Value("ph", 7.0 + i % 10 / 100, "pH"),), t + i * 1000, raw=f"7.{i}")
            for i in range(n)
        ]
        await log_.append(items, checkpoint=True)


def _run(station: Station, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GATEWAY, *args, "--config", str(station.cfg)],
        capture_output=True,
        text=True,
        timeout=30,  # a hang is a failure, not a wait
        check=False,
    )


def _restore(station: Station) -> None:
    for suffix in ("-wal", "-shm"):
        Path(str(station.db) + suffix).unlink(missing_ok=True)
    shutil.copyfile(station.good, station.db)


def _garbage_page(db: Path) -> int:
    """Overwrite a B-tree page in the second half of the file with random bytes; its number."""
    data = bytearray(db.read_bytes())
    size = int.from_bytes(data[16:18], "big")  # the page size, from the header
    pages = len(data) // size
    for page in range(pages // 2, pages):
        if data[(page - 1) * size] in _BTREE_PAGE_TYPES:  # 1-based; not page 1
            data[(page - 1) * size : page * size] = os.urandom(size)
            db.write_bytes(bytes(data))
            return page
    raise AssertionError("no B-tree page in the second half of the file")


def _damage(station: Station, how: str) -> str:
    """Damage the station's database ``how``; the words its refusal must contain."""
    _restore(station)
    db = station.db
    if how == "bad-page":
        _garbage_page(db)
        return "_check"  # quick_check at open, integrity_check in gateway check
    if how == "bad-header":
        with db.open("r+b") as f:
            f.write(os.urandom(100))
        return "lacks SQLite's header"
    if how == "truncated":
        os.truncate(db, db.stat().st_size // 2 + 1000)
        return "truncated"
    assert how == "deleted"
    db.unlink()
    return "deleted"


CASES = ["bad-page", "bad-header", "truncated", "deleted"]


@pytest.mark.parametrize("how", CASES)
def test_a_damaged_database_is_refused_by_run_export_and_status(station: Station, how: str) -> None:
    said = _damage(station, how)
    before = station.db.read_bytes() if station.db.exists() else None
    for args in (["run"], ["export", "--out", str(station.dir / "b.tar")], ["status"]):
        t0 = time.monotonic()
        done = _run(station, *args)
        took = time.monotonic() - t0
        out = done.stdout + done.stderr
        assert done.returncode != 0, f"gateway {args[0]} accepted a {how} database:\n{out}"
        assert took < 30
        if how == "deleted":
            # run: the key's history says the log existed; export and status: there is none.
            assert "deleted" in out or "no log database" in out, out
        else:
            assert "is damaged" in out and str(station.db) in out and said in out, out
            assert "restore" in out, out  # how to recover
        assert "Traceback" not in out, out
        # Never repaired, never recreated.
        after = station.db.read_bytes() if station.db.exists() else None
        assert after == before, f"gateway {args[0]} changed the {how} database"
    assert not (station.dir / "b.tar").exists()


def test_store_problems_names_each_damage_and_passes_a_sound_database(station: Station) -> None:
    _restore(station)
    assert store_problems(station.db) == []
    for how in CASES:
        said = _damage(station, how)
        problems = store_problems(station.db)
        if how == "deleted":
            assert problems == []  # whether a log should exist is the history's question
        else:
            assert len(problems) >= 1 and said in problems[0], problems
            assert str(station.db) in problems[0]
    _restore(station)


def test_header_problem_reads_size_and_header() -> None:
    head = bytearray(100)
    head[:16] = b"SQLite format 3\x00"
    head[16:18] = (4096).to_bytes(2, "big")
    head[28:32] = (10).to_bytes(4, "big")  # ten pages, counters agreeing
    assert header_problem(bytes(head), 0) is None
    assert header_problem(bytes(head), 40960) is None
    assert header_problem(bytes(head), 40960 + 4096) is None  # longer is fine (freed pages)
    assert "truncated" in str(header_problem(bytes(head), 20480))
    assert "whole number" in str(header_problem(bytes(head), 40000))
    assert "100-byte" in str(header_problem(bytes(head[:50]), 50))
    head[24:28] = (7).to_bytes(4, "big")  # counters disagree: the count is not to be trusted
    assert header_problem(bytes(head), 20480) is None
    head[16:18] = (3000).to_bytes(2, "big")
    assert "page size" in str(header_problem(bytes(head), 30000))
    assert "lacks" in str(header_problem(b"x" * 100, 4096))
