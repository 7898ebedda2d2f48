"""``sensor-sim fleet``: three boxes for a few seconds, to a real nginx and a real Mosquitto.

Each box's log is published under its device id and verifies with
``ledger-verify`` against its own trust file; each box's newest checkpoint is
retained on its own topic; the report counts what was done, in one process or
summed over worker processes (``--procs``), whose workers die with their parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt
import httpx
import pytest

from ledger_client.cli import main as verify_main
from tests.servers.broker import Broker
from tests.servers.web_server import WebServer


async def retained(broker: Broker, topic_filter: str, want: int) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe(topic_filter, qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                async for message in client.messages:
                    assert message.retain and isinstance(message.payload, bytes)
                    found[str(message.topic)] = message.payload
                    if len(found) == want:
                        break
    return found


FLEET = [sys.executable, "-m", "simulators.cli", "fleet"]


@pytest.mark.parametrize("procs", [1, 2])
async def test_three_boxes_publish_three_verifiable_logs(
    tmp_path: Path, web_server: WebServer, mosquitto: Broker, procs: int
) -> None:
    data = tmp_path / "fleet"
    run = await asyncio.to_thread(
        subprocess.run,
        [
            *(*FLEET, "--boxes", "3", "--procs", str(procs)),
            *("--to", f"{web_server.url}/fleet", "--data", str(data)),
            *("--broker", f"{mosquitto.host}:{mosquitto.port}"),
            *("--seconds", "4", "--rate", "5", "--checkpoint-every", "1"),
            *("--commit-every", "1"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    banner, line = run.stdout.strip().splitlines()
    assert banner.startswith("fleet: 3 boxes running")
    report = json.loads(line)
    assert report["boxes"] == 3 and report["caught_up"] == 3 and report["procs"] == procs
    assert report["commits"] >= 3 * 3  # a commit a second each, after up to 1 s out of step
    assert report["entries"] == report["published"] >= 3 * 15  # 5 a second, about 4 s
    devices = sorted(p.stem for p in (data / "trust").glob("*.txt"))
    assert len(devices) == 3

    notes = await retained(mosquitto, "riverseal/+/checkpoint", 3)
    assert sorted(notes) == [f"riverseal/{d}/checkpoint" for d in devices]
    total = 0
    for d in devices:
        prefix = f"{web_server.url}/fleet/{d}"
        served = httpx.get(f"{prefix}/checkpoint").content
        assert notes[f"riverseal/{d}/checkpoint"] == served  # the newest, announced
        out = io.StringIO()
        trust = data / "trust" / f"{d}.txt"
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            rc = await asyncio.to_thread(
                verify_main, [prefix, "--trust", str(trust), "--json", "--jobs", "1"]
            )
        doc = json.loads(out.getvalue())
        assert rc == 3 and doc["failure_count"] == 0, doc["failures"][:5]
        assert doc["device"] == d and doc["entries"] == int(served.split(b"\n")[1])
        total += doc["entries"]
    assert total == report["entries"]


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def committed(store: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
        try:
            return int(db.execute("SELECT count(*) FROM entries").fetchone()[0])
        except sqlite3.OperationalError:  # not created yet
            return 0


def alive(pid: int) -> bool:
    """Running, not ended (a zombie waiting for whoever adopted it counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_workers_stop_when_the_parent_is_killed(tmp_path: Path) -> None:
    data = tmp_path / "fleet"
    out = tmp_path / "fleet.out"
    with out.open("wb") as o:
        parent = subprocess.Popen(
            [
                *(*FLEET, "--boxes", "2", "--procs", "2", "--to", str(tmp_path / "pub")),
                *("--data", str(data), "--commit-every", "0.5"),
            ],
            stdout=o,
        )
    try:
        deadline = time.monotonic() + 60
        while b"boxes running" not in out.read_bytes():
            assert parent.poll() is None and time.monotonic() < deadline, out.read_text()
            time.sleep(0.1)
        workers = children(parent.pid)
        assert len(workers) == 2
        while min(map(committed, data.glob("rs-*/log.sqlite")), default=0) == 0:
            assert time.monotonic() < deadline, "the boxes committed nothing"
            time.sleep(0.1)
        parent.kill()
        parent.wait()
        # Each worker is told (SIGTERM, the parent-death signal) and stops; none is left.
        while any(alive(w) for w in workers):
            assert time.monotonic() < deadline + 60, "a worker outlived its parent"
            time.sleep(0.1)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    # Both stopped cleanly: each box signed a final checkpoint of all it committed.
    stores = sorted(data.glob("rs-*/log.sqlite"))
    assert len(stores) == 2
    for store in stores:
        with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
            (signed,) = db.execute("SELECT max(size) FROM checkpoints").fetchone()
        assert signed == committed(store) > 0
