"""Whole-gateway tests against a real Mosquitto broker: duplicates, malformed input, kill -9.

The gateway runs as a real process (``gateway run``); readings are published
with QoS 1 by a separate client; the log is read back from the SQLite file.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt
import pytest

from gateway.store import decode_data
from ledger_client import merkle
from ledger_client.records import parse_entry
from tests.gateway.daemon_procs import GATEWAY, start, subscribed


def payload(seq: int, value: float = 12.0) -> bytes:
    return json.dumps(
        {
            "seq": seq,
            "time": "2026-11-21T05:00:00.000Z",
            "values": [{"q": "turbidity", "v": value, "u": "NTU"}],
        }
    ).encode()


def make_station(tmp_path: Path, broker: tuple[str, int], client_id: str) -> Path:
    subprocess.run([*GATEWAY, "init", str(tmp_path)], check=True, capture_output=True)
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        '[device]\nkey_file = "device.key"\ndata_dir = "data"\n'
        "[log]\ncheckpoint_every_entries = 50\ncheckpoint_every_seconds = 0.5\n"
        f'[mqtt]\nhost = "{broker[0]}"\nport = {broker[1]}\nclient_id = "{client_id}"\n'
        f'[[sensor]]\nid = "node-1"\ndriver = "mqtt"\ntopic = "{client_id}/node-1"\n'
    )
    return cfg


def readings(db: Path) -> list[tuple[int, int, int]]:
    """(index, gateway seq, src_seq) of every node-1 reading committed so far."""
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        rows = c.execute("SELECT data FROM entries WHERE kind = 'reading' ORDER BY idx").fetchall()
    out = []
    for (data,) in rows:
        e = parse_entry(decode_data(data))
        out.append((e.index, e.seq or 0, int(e.rec["src_seq"])))
    return out


async def wait_for_count(db: Path, n: int, timeout: float = 60) -> list[tuple[int, int, int]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = readings(db)
        if len(rows) >= n:
            return rows
        await asyncio.sleep(0.1)
    raise AssertionError(f"only {len(readings(db))} of {n} readings committed in {timeout} s")


async def test_duplicates_and_malformed_payloads_through_the_whole_gateway(
    tmp_path: Path, mosquitto: tuple[str, int], procs: list[subprocess.Popen[bytes]]
) -> None:
    cfg = make_station(tmp_path, mosquitto, "dup-test")
    proc = start(cfg, procs)
    db = tmp_path / "data" / "log.sqlite"
    topic = "dup-test/node-1"
    await subscribed(cfg, proc)
    async with aiomqtt.Client(mosquitto[0], mosquitto[1], identifier="dup-pub") as pub:
        for seq in range(20):
            await pub.publish(topic, payload(seq), qos=1)
            if seq % 5 == 0:  # the node retries: the very same message again
                await pub.publish(topic, payload(seq), qos=1)
        for bad in (
            b"\xff\xfe not json",
            b'{"seq": "x"}',
            b"[]",
            b'{"seq": 99, "time": "noon", "values": []}',
        ):
            await pub.publish(topic, bad, qos=1)
        await pub.publish(topic, payload(20), qos=1)
    rows = await wait_for_count(db, 21)
    await asyncio.sleep(0.5)
    rows = readings(db)
    assert sorted(r[2] for r in rows) == list(range(21))  # exactly once each
    assert [r[1] for r in rows] == list(range(21))  # gateway sequence has no holes
    assert proc.poll() is None  # malformed input did not stop it
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    status = json.loads((tmp_path / "data" / "status.json").read_text())
    assert sum(n for k, n in status["rejected"].items() if k.startswith("node-1/")) == 4
    log_text = (tmp_path / "gateway.log").read_text()
    assert "node-1" in log_text
    assert "rejected" in log_text


@pytest.mark.slow
async def test_kill_9_loses_no_acknowledged_reading_and_duplicates_none(
    tmp_path: Path, mosquitto: tuple[str, int], procs: list[subprocess.Popen[bytes]]
) -> None:
    total = 600
    cfg = make_station(tmp_path, mosquitto, "crash-test")
    db = tmp_path / "data" / "log.sqlite"
    topic = "crash-test/node-1"
    proc = start(cfg, procs)
    checkpoints_before: list[tuple[int, bytes]] = []
    await subscribed(cfg, proc)  # its persistent session exists from then on
    async with aiomqtt.Client(mosquitto[0], mosquitto[1], identifier="crash-pub") as pub:
        for round_ in range(3):  # kill twice mid-stream, then let it finish
            lo, hi = round_ * total // 3, (round_ + 1) * total // 3
            for seq in range(lo, hi):
                await pub.publish(
                    topic, payload(seq, seq / 10), qos=1
                )  # broker PUBACK: acknowledged
                await asyncio.sleep(0.002)
            if round_ < 2:
                await wait_for_count(db, lo + 20)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
                    checkpoints_before += [
                        (int(s), bytes(r))
                        for s, r in c.execute("SELECT size, root FROM checkpoints")
                    ]
                proc = start(cfg, procs)
    rows = await wait_for_count(db, total, timeout=90)
    await asyncio.sleep(1.0)  # anything redelivered late must still be deduplicated
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    rows = readings(db)
    assert sorted(r[2] for r in rows) == list(range(total))  # every reading, exactly once
    # The gateway's seq has no holes: the readings, and the gateway-down gap each restart
    # writes (it takes the sensor's next seq, like any gap).
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        kinds = c.execute("SELECT kind, seq FROM entries WHERE sensor = 'node-1' ORDER BY idx")
        seqs = [(str(k), int(q)) for k, q in kinds]
    assert [q for _, q in seqs] == list(range(total + 2))
    assert [k for k, _ in seqs].count("gap") == 2
    # The log after both crashes extends every checkpoint signed before them.
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        entries = [decode_data(d) for (d,) in c.execute("SELECT data FROM entries ORDER BY idx")]
    tree = merkle.MerkleTree(entries)
    assert checkpoints_before
    for size, root in checkpoints_before:
        assert tree.root(size) == root
    # And a regulator's verifier accepts the whole history.
    bundle = tmp_path / "bundle.json"
    subprocess.run(
        [*GATEWAY, "export", "--config", str(cfg), "--out", str(bundle)],
        check=True,
        capture_output=True,
    )
    verify = subprocess.run(
        [
            sys.executable,
            "-m",
            "ledger_client",
            str(bundle),
            "--trust",
            str(tmp_path / "trust.txt"),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 3, verify.stdout[-2000:]  # local anchors: not dated
    verdict = json.loads(verify.stdout)
    assert verdict["level"] == "authentic-undated" and verdict["failure_count"] == 0
    assert verdict["entries"] == len(entries)
