"""``sensor-sim fleet``: three boxes for a few seconds, to a real nginx and a real Mosquitto.

Each box's log is published under its device id and verifies with
``ledger-verify`` against its own trust file; each box's newest checkpoint is
retained on its own topic; the report counts what was done.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import aiomqtt
import httpx

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


async def test_three_boxes_publish_three_verifiable_logs(
    tmp_path: Path, web_server: WebServer, mosquitto: Broker
) -> None:
    data = tmp_path / "fleet"
    run = await asyncio.to_thread(
        subprocess.run,
        [
            *(sys.executable, "-m", "simulators.cli", "fleet", "--boxes", "3"),
            *("--to", f"{web_server.url}/fleet", "--data", str(data)),
            *("--broker", f"{mosquitto.host}:{mosquitto.port}"),
            *("--seconds", "4", "--rate", "5", "--checkpoint-every", "1"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    banner, line = run.stdout.strip().splitlines()
    assert banner.startswith("fleet: 3 boxes running")
    report = json.loads(line)
    assert report["boxes"] == 3 and report["caught_up"] == 3
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
