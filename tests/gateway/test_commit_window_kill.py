"""SIGKILL while readings wait in the commit window loses nothing acknowledged.

A real ``gateway run`` with a long ``commit_window_s``, a real Mosquitto and a
QoS 1 publisher: every message the broker acknowledged (PUBACK) to the
publisher is in the log once after the gateway is killed inside its window and
started again, because the gateway acknowledges a message to the broker only
after its commit, and the broker keeps the gateway's persistent session.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt

from tests.gateway.daemon_procs import records, start, subscribed

WINDOW_S = 3.0


def station(tmp_path: Path, mosquitto: tuple[str, int]) -> Path:
    subprocess.run(
        [sys.executable, "-m", "gateway", "init", str(tmp_path)], check=True, capture_output=True
    )
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        '[device]\nkey_file = "device.key"\ndata_dir = "data"\n'
        f"[log]\ncommit_window_s = {WINDOW_S}\n"
        f'[mqtt]\nhost = "{mosquitto[0]}"\nport = {mosquitto[1]}\n'
        'client_id = "commit-window-kill"\n'
        '[[sensor]]\nid = "node"\ndriver = "mqtt"\ntopic = "commit-window-kill/node"\n'
    )
    return cfg


async def publish(mosquitto: tuple[str, int], seqs: range) -> None:
    """QoS 1: each ``publish`` returns once the broker has acknowledged the message."""
    async with aiomqtt.Client(*mosquitto, identifier="commit-window-kill-pub") as pub:
        for seq in seqs:
            body = {
                "seq": seq,
                "time": f"2026-12-06T03:00:{seq:02d}.000Z",
                "values": [{"q": "ph", "v": 7.0, "u": "pH"}],
            }
            await pub.publish("commit-window-kill/node", json.dumps(body), qos=1)


def logged_seqs(db: Path) -> list[int]:
    return [int(r["src_seq"]) for r in records(db) if r["kind"] == "reading"]


async def test_kill_inside_the_window_loses_no_acknowledged_reading(
    tmp_path: Path, mosquitto: tuple[str, int], procs: list[subprocess.Popen[bytes]]
) -> None:
    cfg = station(tmp_path, mosquitto)
    db = tmp_path / "data" / "log.sqlite"
    gateway_log = tmp_path / "gateway.log"
    proc = start(cfg, procs)
    await subscribed(cfg, proc)
    await asyncio.sleep(1.5)  # a quiet spell since the boot event
    await publish(mosquitto, range(1, 4))  # each one PUBACKed by the broker
    # A lone burst after a quiet spell waits the window: killed inside it, these
    # readings are not committed, and the broker has no PUBACK for them.
    await asyncio.sleep(0.5)
    assert logged_seqs(db) == []
    proc.kill()
    proc.wait()
    await publish(mosquitto, range(4, 6))  # the broker keeps them for the gateway's session
    proc = start(cfg, procs)  # and redelivers what was never acknowledged to it
    deadline = time.monotonic() + 30
    while sorted(logged_seqs(db)) != [1, 2, 3, 4, 5]:
        assert time.monotonic() < deadline, f"logged: {logged_seqs(db)}"
        assert proc.poll() is None, gateway_log.read_text()
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # and nothing is logged twice
    assert sorted(logged_seqs(db)) == [1, 2, 3, 4, 5]
