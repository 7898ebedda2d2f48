"""Retention under a real ``gateway run`` (docs/operations.md, "Retention").

A log is made in-process with 600 readings received 40 days ago and 300 yesterday, then a
real gateway with ``retain_days = 30``, a local anchor journal and an MQTT node runs on it.
Run 1: its start pass may prune nothing (nothing is exported yet); its local anchor makes
checkpoints final. It is stopped, the log is exported (``exported_size`` rises), and run 2's
start pass prunes the record bodies of entries 0–511 (the age line is entry 600, the entry
bundle below it is whole) while the node's readings keep coming. On the store: nothing at
or above 512 is touched, the line is never above the newest final anchor nor the exported
position, and status.json, ``gateway status`` and the metrics show it. Then a default
export starts at entry 512 and ``ledger-verify --trust`` says AUTHENTIC (exit 3: local
anchors only), and an export of the old time range is refused naming entry 512.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import load_config
from gateway.health.metrics import render_metrics
from gateway.keys import load_device_key
from gateway.log import Log
from gateway.pipeline import Reading, Value
from gateway.store import Store, decode_data
from ledger_client.records import format_time
from tests.gateway.daemon_procs import GATEWAY, start

LEDGER_VERIFY = [sys.executable, "-m", "ledger_client"]
DAY_NS = 86_400 * 10**9


def rows(db: Path) -> list[tuple[int, bytes]]:
    """(index, record body) of every entry, read-only while the daemon writes."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
        return [(int(i), decode_data(d)) for i, d in c.execute("SELECT idx, data FROM entries")]


def meta(db: Path, key: str) -> int | None:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
        row = c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else int(row[0])


def final_anchor(db: Path) -> int | None:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
        row = c.execute(
            "SELECT MAX(checkpoint) FROM anchors WHERE backend = 'local' AND state = 'final'"
        ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def status(data: Path) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads((data / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # not written yet, or mid-write
        return {}
    return doc


async def until(
    what: str, check: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path, s: float
) -> None:
    deadline = time.monotonic() + s
    while not check():
        assert proc.poll() is None, f"the gateway exited:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{what}: not within {s} s\n{log.read_text()[-3000:]}"
        await asyncio.sleep(0.1)


async def node(broker: tuple[str, int], topic: str, stop: asyncio.Event) -> None:
    """A reading every 50 ms, QoS 1, until ``stop``."""
    async with aiomqtt.Client(broker[0], broker[1], identifier=f"{topic}-node") as client:
        seq = 0
        while not stop.is_set():
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            body = {"seq": seq, "time": now, "values": [{"q": "pH", "v": 7.0, "u": "[pH]"}]}
            await client.publish(topic, json.dumps(body), qos=1)
            seq += 1
            await asyncio.sleep(0.05)


def stop_gateway(proc: subprocess.Popen[bytes], log: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]


@pytest.mark.slow  # 14 s alone, 25 s on a loaded machine
async def test_a_running_gateway_prunes_only_below_the_line(
    tmp_path: Path, mosquitto: tuple[str, int], procs: list[subprocess.Popen[bytes]]
) -> None:
    topic = f"retention-{uuid.uuid4().hex[:8]}"
    subprocess.run([*GATEWAY, "init", str(tmp_path)], check=True, capture_output=True)
    cfg_path = tmp_path / "gateway.toml"
    cfg_path.write_text(
        '[device]\nkey_file = "device.key"\ndata_dir = "data"\n'
        "[log]\ncheckpoint_every_entries = 100\ncheckpoint_every_seconds = 0.5\n"
        "[anchor.local]\nenabled = true\n"
        "[storage]\nretain_days = 30\n"
        f'[mqtt]\nhost = "{mosquitto[0]}"\nport = {mosquitto[1]}\nclient_id = "{topic}-gw"\n'
        f'[[sensor]]\nid = "node-1"\ndriver = "mqtt"\ntopic = "{topic}"\ninterval_s = 1\n'
    )
    cfg = load_config(cfg_path, secrets=False)
    db, data, log = cfg.db_path, cfg.data_dir, tmp_path / "gateway.log"
    key = load_device_key(cfg.key_file)
    old = time.time_ns() - 40 * DAY_NS
    young = time.time_ns() - DAY_NS
    async with Store(db) as store:  # the box's first 600 readings 40 days ago, 300 yesterday
        log_ = Log(store, key)
        await log_.open()
        for first, n, at in ((0, 600, old), (600, 300, young)):
            await log_.append(
                [
                    Reading("ph-1", (Value("ph", 7.0, "pH"),), at + i * 10**6, raw=f"r{first + i}")
                    for i in range(n)
                ],
                checkpoint=True,
            )
    (tmp_path / "trust.txt").write_text(f"key {key.vkey}\n")

    stop = asyncio.Event()
    feeding = asyncio.create_task(node(mosquitto, topic, stop), name="test.node")
    try:
        # Run 1: anchored final, but not exported: nothing may go.
        proc = start(cfg_path, procs)
        await until("a final anchor", lambda: (final_anchor(db) or 0) > 900, proc, log, 30)
        await until(
            "a retention pass",
            lambda: (status(data).get("retention") or {}).get("next_run") is not None,
            proc,
            log,
            15,
        )
        first = status(data)["retention"]
        # Whether the local anchor was final yet at the start pass or not, nothing went.
        assert first["retained_from"] == 0 and first["prunable_below"] == 0, first
        assert first["limit"] in ("anchor:local", "copies"), first
        assert first["retain_days"] == 30 and first["next_run"] is not None
        stop_gateway(proc, log)
        assert meta(db, "pruned_below") is None
        assert all(body for _, body in rows(db))

        # Exported: the copies bound rises above the age line.
        whole = tmp_path / "whole.tar"
        out = subprocess.run(
            [*GATEWAY, "export", "--config", str(cfg_path), "--out", str(whole)],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
        exported = meta(db, "exported_size")
        assert exported is not None and exported > 900
        before = dict(rows(db))

        # Run 2: its start pass prunes 0–511 while readings keep coming.
        proc = start(cfg_path, procs)
        await until("pruning", lambda: meta(db, "pruned_below") == 512, proc, log, 30)
        grown = len(before) + 20
        await until("the log growing", lambda: len(rows(db)) > grown, proc, log, 30)
        await until(
            "status showing it",
            lambda: (status(data).get("retention") or {}).get("retained_from") == 512,
            proc,
            log,
            15,
        )
        doc = status(data)
        shown = doc["retention"]
        assert (shown["prunable_below"], shown["limit"]) == (512, "age"), shown
        assert shown["last_error"] is None and shown["longest_step_ms"] > 0
        text = subprocess.run(
            [*GATEWAY, "status", "--config", str(cfg_path)], capture_output=True, text=True
        )
        assert text.returncode == 0, text.stderr
        assert "records kept from entry 512 (bound by age)" in text.stdout, text.stdout
        gauges = {
            s.name: s.value
            for family in text_string_to_metric_families(render_metrics(doc))
            for s in family.samples
        }
        assert gauges["riverseal_retention_retained_from"] == 512
        said = "retention: record bodies of entries 0 to 511 pruned (512 rows; bound by age)"
        assert said in log.read_text()
        after = dict(rows(db))
        assert [i for i, body in after.items() if not body] == list(range(512))
        # Nothing at or above the line was touched; the bodies below it were there before.
        assert all(after[i] == body for i, body in before.items() if i >= 512)
        assert all(before[i] for i in range(512))
        # The line is never above what is anchored final and what was exported.
        line = meta(db, "pruned_below")
        assert line is not None and line <= (final_anchor(db) or 0) and line <= exported
        stop_gateway(proc, log)
    finally:
        stop.set()
        await feeding

    # A default export starts at the first retained entry and verifies.
    kept = tmp_path / "kept.tar"
    out = subprocess.run(
        [*GATEWAY, "export", "--config", str(cfg_path), "--out", str(kept)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "(tree 512–" in out.stdout, out.stdout
    verified = subprocess.run(
        [*LEDGER_VERIFY, str(kept), "--trust", str(tmp_path / "trust.txt"), "--jobs", "1"],
        capture_output=True,
        text=True,
    )
    assert verified.returncode == 3, verified.stdout[-2000:]  # local anchors only
    assert "FAILED" not in verified.stdout
    # The old time range is refused, naming the first retained entry.
    window = ["--since", format_time(old), "--until", format_time(old + 10**9)]
    refused = subprocess.run(
        [
            *GATEWAY,
            "export",
            "--config",
            str(cfg_path),
            "--out",
            str(tmp_path / "old.tar"),
            *window,
        ],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1, refused.stdout
    assert "the first retained entry is 512" in refused.stderr, refused.stderr
    assert not (tmp_path / "o.tar").exists()
