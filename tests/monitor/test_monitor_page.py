"""The monitor's page in headless Chromium, over a live fleet (acceptance 4 of issue 12).

Two ``sensor-sim fleet`` boxes publish to a real nginx and announce on a real
Mosquitto; a ``riverseal-monitor run`` process follows them and serves its page.
One page load in Chromium: the DOM, dumped after the page's script has run for
a while, lists each station with its verdict and has a chart per sensor; the
page updated itself (long poll) and its charts hold more points than had been
verified when it was loaded.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.monitor.fleet_monitor import (
    boxes_of,
    free_port,
    monitor_toml,
    run_monitor,
    start_fleet,
)
from tests.servers.web_server import WebServer


def readings(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        try:
            return int(c.execute("SELECT COUNT(*) FROM readings").fetchone()[0])
        except sqlite3.OperationalError:
            return 0  # no schema yet


def dump_dom(tmp_path: Path, url: str, budget_ms: int) -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed: run scripts/setup --dev", pytrace=False)
    run = subprocess.run(
        [
            *(exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"),
            *("--disable-extensions", f"--user-data-dir={tmp_path / 'chromium-profile'}"),
            f"--virtual-time-budget={budget_ms}",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        timeout=90,
        check=True,
    )
    return run.stdout.decode("utf-8")


def test_page_shows_stations_and_live_charts(
    tmp_path: Path,
    mosquitto: tuple[str, int],
    web_server: WebServer,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    to = f"{web_server.url}/page-{uuid.uuid4().hex[:6]}"
    data = tmp_path / "fleet"
    start_fleet(procs, to=to, data=data, broker=mosquitto, boxes=2, seed=41, rate=2)
    boxes = boxes_of(data, to)
    assert len(boxes) == 2
    port = free_port()
    cfg = monitor_toml(
        tmp_path / "monitor" / "monitor.toml",
        "monitor.sqlite",
        boxes,
        mosquitto,
        f'listen = "127.0.0.1:{port}"\n',
    )
    db = cfg.parent / "monitor.sqlite"
    mon = run_monitor(cfg, "monitor", procs)
    deadline = time.monotonic() + 30
    while readings(db) < 10:
        assert mon.poll() is None and time.monotonic() < deadline, (
            cfg.parent / "monitor.log"
        ).read_text()[-3000:]
        time.sleep(0.2)

    api = httpx.get(f"http://127.0.0.1:{port}/api/stations", timeout=15).json()
    assert sorted(s["origin"] for s in api["stations"]) == sorted(o for o, _, _ in boxes)
    before = readings(db)
    dom = dump_dom(tmp_path, f"http://127.0.0.1:{port}/", 4_000)

    rows = re.findall(r'<tr class="station" data-origin="([^"]+)" data-level="([A-Z]+)"', dom)
    assert sorted(o for o, _ in rows) == sorted(o for o, _, _ in boxes), dom[:3000]
    assert {lv for _, lv in rows} == {"VERIFIED"}, rows
    charts = re.findall(
        r'<svg[^>]*class="chart"[^>]*data-origin="([^"]+)" data-sensor="([^"]+)" '
        r'data-points="(\d+)"',
        dom,
    )
    assert sorted((o, s) for o, s, _ in charts) == sorted((o, "ph-1") for o, _, _ in boxes)
    assert dom.count("<polyline") == 2
    updates = re.search(r'<body[^>]* data-updates="(\d+)"', dom)
    first = re.search(r'<body[^>]* data-first-points="(\d+)"', dom)
    assert updates is not None and first is not None, dom[:2000]
    shown = sum(int(n) for _, _, n in charts)
    # The page redrew itself after new readings were verified: more points than at first
    # and than the monitor had verified when the page was loaded.
    assert int(updates[1]) >= 2, updates[1]
    assert shown > int(first[1]) and shown > before, (shown, first[1], before)
    assert readings(db) >= shown
    series = httpx.get(
        f"http://127.0.0.1:{port}/api/series", params={"origin": boxes[0][0]}, timeout=5
    ).json()
    points = series["sensors"]["ph-1"]["points"]
    assert all(isinstance(v, float) and 6.5 < v < 8.5 for _, v, _ in points), points[:5]
    assert series["checkpoint"]["size"] >= len(points)
    assert httpx.get(f"http://127.0.0.1:{port}/nowhere", timeout=5).status_code == 404
