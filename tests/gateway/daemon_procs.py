"""Real ``gateway run`` processes for tests: start one, read what its log holds so far.

The ``procs`` fixture (tests/gateway/conftest.py) kills whatever a test left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gateway.store import decode_data

GATEWAY = [sys.executable, "-m", "gateway"]


def start(
    cfg: Path, procs: list[subprocess.Popen[bytes]], env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``gateway run --config cfg``, its output appended to ``gateway.log`` beside it."""
    with (cfg.parent / "gateway.log").open("ab") as out:
        p = subprocess.Popen(
            [*GATEWAY, "run", "--config", str(cfg)],
            stdout=out,
            stderr=out,
            env=None if env is None else {**os.environ, **env},
        )
    procs.append(p)
    return p


def records(db: Path) -> list[dict[str, Any]]:
    """Every record committed so far, read-only, while the daemon may be writing."""
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
        try:
            rows = c.execute("SELECT data FROM entries ORDER BY idx").fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # the daemon has made the file, not yet its schema
                return []
            raise
    return [json.loads(decode_data(d))["rec"] for (d,) in rows]


async def subscribed(
    cfg: Path, proc: subprocess.Popen[bytes], times: int = 1, within_s: float = 30.0
) -> None:
    """Until the daemon's MQTT source has connected and subscribed ``times`` times.

    A broker acknowledges a node's PUBLISH whether or not anyone subscribes: a
    reading published before the gateway's first subscription is the broker's
    to drop, never the gateway's to log."""
    log = cfg.parent / "gateway.log"
    deadline = time.monotonic() + within_s
    while log.read_bytes().count(b"mqtt: connected") < times:
        assert proc.poll() is None, f"the gateway exited:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"the gateway did not subscribe within {within_s} s"
        await asyncio.sleep(0.05)
