"""One history per key: a box whose log.sqlite is deleted or restored from an older copy
refuses to start (real ``gateway run`` processes), until ``gateway reset-history`` starts a
new log whose entry 0 is a signed ``history-reset`` event naming what it replaces.

The runs that build the history are the real daemon in-process (no sensors; each start and
clean stop writes a boot and a stop event, signs a checkpoint, journals it locally and
writes the high-water file beside the key).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config
from gateway.daemon import Gateway
from gateway.history import HistoryConflict, high_water_path, read_high_water
from gateway.keys import create_device_key
from gateway.store import decode_data
from ledger_client.checkpoint import Checkpoint
from ledger_client.note import split_note

GATEWAY = [sys.executable, "-m", "gateway"]


def make_box(tmp_path: Path) -> Path:
    create_device_key(tmp_path / "device.key")
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        '[device]\nkey_file = "device.key"\ndata_dir = "data"\n'
        "[log]\ncheckpoint_every_seconds = 0.5\n"
    )
    return cfg


async def run_once(cfg: Path) -> None:
    """Start the daemon, and stop it cleanly as soon as it runs."""
    gw = Gateway(load_config(cfg), sources=[], status_every_s=60)
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop))
    async with asyncio.timeout(20):
        started = asyncio.create_task(gw.started.wait())
        await asyncio.wait([task, started], return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        stop.set()
        await task


def gateway(*args: str, cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GATEWAY, *args, "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def db_files(data: Path) -> list[Path]:
    names = (data / f"log.sqlite{suffix}" for suffix in ("", "-wal", "-shm"))
    return [f for f in names if f.exists()]


def remove_db(data: Path) -> None:
    for f in db_files(data):
        f.unlink()


def entries(db: Path) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
        rows = c.execute("SELECT data FROM entries ORDER BY idx").fetchall()
    return [json.loads(decode_data(d))["rec"] for (d,) in rows]


def test_a_lost_or_old_database_is_refused_until_the_history_is_reset(tmp_path: Path) -> None:
    cfg = make_box(tmp_path)
    data = tmp_path / "data"
    hw_path = high_water_path(tmp_path / "device.key")
    assert hw_path == tmp_path / "device.key.history"

    # A fresh box starts normally and writes the high-water file (mode 0600) at its stop.
    asyncio.run(run_once(cfg))
    first = read_high_water(hw_path)
    assert first is not None and first.size == 2  # boot, stop
    assert hw_path.stat().st_mode & 0o777 == 0o600
    old = tmp_path / "old-copy"
    old.mkdir()
    assert db_files(data) == [data / "log.sqlite"]  # closed cleanly: one self-contained file
    shutil.copy2(data / "log.sqlite", old / "log.sqlite")

    asyncio.run(run_once(cfg))
    mark = read_high_water(hw_path)
    assert mark is not None and mark.size == 4
    assert mark.note is not None
    body = split_note(mark.note)[0]
    assert Checkpoint.parse(body).root == mark.root
    root4 = base64.b64encode(mark.root).decode()

    # The database is deleted: refused, naming the checkpoint, without a traceback.
    remove_db(data)
    run = gateway("run", cfg=cfg)
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert f"this key already signed checkpoint 4 (root {root4}" in run.stderr
    assert str(hw_path) in run.stderr
    assert "log.sqlite holds no entries" in run.stderr
    assert "deleted or restored from an older copy" in run.stderr
    assert "gateway reset-history" in run.stderr and "--reason" in run.stderr

    # An older copy is put back: refused too.
    remove_db(data)  # the empty database the refused start left
    shutil.copy2(old / "log.sqlite", data / "log.sqlite")
    run = gateway("run", cfg=cfg)
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert "checkpoint 4" in run.stderr and "log.sqlite holds only 2 entries" in run.stderr
    assert len(entries(data / "log.sqlite")) == 2  # nothing was written

    # reset-history is refused while status.json names a live process (this one, which ran
    # the daemon last), then, with that cleared, starts a new history.
    why = "SD card replaced; log restored from a backup"
    reset = gateway("reset-history", "--reason", why, cfg=cfg)
    assert reset.returncode == 1 and "appears to be running" in reset.stderr
    (data / "status.json").unlink()
    reset = gateway("reset-history", "--reason", why, cfg=cfg)
    assert reset.returncode == 0, reset.stderr
    assert "Traceback" not in reset.stderr
    assert "superseded: checkpoint 4" in reset.stdout
    assert "Regulators will see the reset" in reset.stdout
    [kept] = list(data.glob("log.sqlite.superseded-*"))
    assert len(entries(kept)) == 2  # the restored copy, kept
    assert list(data.glob("anchors-local.sqlite.superseded-*"))

    recs = entries(data / "log.sqlite")
    assert [r.get("event") for r in recs] == ["history-reset", "stop"]
    reset_rec = recs[0]
    assert reset_rec["index"] == 0
    assert reset_rec["detail"] == {
        "reason": why,
        "previous": {"size": 4, "root": root4, "checkpoint": mark.note, "source": str(hw_path)},
    }
    after = read_high_water(hw_path)
    assert after is not None and after.size == 2  # the new history's checkpoint

    # The new history starts; its first boot follows the reset's clean end.
    asyncio.run(run_once(cfg))
    recs = entries(data / "log.sqlite")
    boot = recs[2]
    assert boot["event"] == "boot"
    assert boot["detail"]["previous"] == {"index": 1, "time": recs[1]["time"], "stop": "clean"}
    assert boot["detail"]["sensors"] == {}
    assert not any(r.get("event") == "config" for r in recs)
    now = read_high_water(hw_path)
    assert now is not None and now.size == len(recs) == 4


async def test_another_history_at_the_same_size_and_a_journal_alone_are_refused(
    tmp_path: Path,
) -> None:
    cfg = make_box(tmp_path)
    config = load_config(cfg)
    await run_once(cfg)
    hw_path = high_water_path(config.key_file)
    doc = json.loads(hw_path.read_text())
    doc["root"] = base64.b64encode(bytes(32)).decode()  # the same size, another tree
    hw_path.write_text(json.dumps(doc))
    with pytest.raises(HistoryConflict, match="the database holds another history") as caught:
        await Gateway(config, sources=[]).run(asyncio.Event())
    assert "checkpoint 2" in str(caught.value)
    assert "reset-history" in caught.value.diagnostics()

    # No high-water file, no database: the local anchor journal still remembers.
    hw_path.unlink()
    remove_db(config.data_dir)
    with pytest.raises(HistoryConflict, match=r"local anchor journal .* holds checkpoint 2"):
        await Gateway(config, sources=[]).run(asyncio.Event())

    # A malformed high-water file is not taken for "no history".
    hw_path.write_text("{}")
    with pytest.raises(HistoryConflict, match="not what the gateway writes"):
        await Gateway(config, sources=[]).run(asyncio.Event())
    assert os.path.exists(config.db_path)
