"""Serial unplug: an EZO probe's USB adapter pulled and plugged back under a real ``gateway run``.

The probe is a simulated EZO pH circuit on a pty (simulators/ezo_pty.py); the gateway
opens it through a symlink, as it opens a udev name (``/dev/riverseal/usb-...``). Pulling
the adapter closes the pty and removes the symlink; plugging it back makes a new pty at
a new device path and points the symlink at it. The same gateway process notices, writes
signed gap records that name a cause (whatever reason the driver reports: not empty),
and logs readings again after the replug without a restart; the regulator's verifier
finds every stretch of the silence covered.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from ledger_client.records import format_time
from simulators.ezo_pty import EzoPtyDevice
from simulators.pty_device import open_raw_pty
from tests.faults.verifying import export_and_verify
from tests.gateway.daemon_procs import GATEWAY, records, start


def station(tmp_path: Path, port: Path) -> Path:
    subprocess.run([*GATEWAY, "init", str(tmp_path)], check=True, capture_output=True)
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        '[device]\nkey_file = "device.key"\ndata_dir = "data"\n'
        # A short gathering window: the EZO source waits for each commit before it polls again.
        "[log]\ncheckpoint_every_seconds = 0.5\ncommit_window_s = 0.02\n"
        '[status]\nlisten = ""\n[anchor.local]\nenabled = true\n'
        f'[[sensor]]\nid = "ph-1"\ndriver = "ezo"\ncircuit = "ph"\nport = "{port}"\n'
        "interval_s = 0.5\ntimeout_s = 0.5\n"
    )
    return cfg


async def wait_for(what: str, check: Any, within: float = 20.0) -> Any:
    """Poll ``check()`` in a thread (this loop serves the simulator) until truthy."""
    deadline = time.monotonic() + within
    while not (got := await asyncio.to_thread(check)):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)
    return got


async def test_an_unplugged_probe_gets_gaps_with_a_cause_and_resumes_after_replug(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    port = tmp_path / "usb-ph"  # the udev-style symlink the config names
    db = tmp_path / "data" / "log.sqlite"
    trust = tmp_path / "trust.txt"

    def log_() -> list[dict[str, Any]]:
        return records(db)

    def readings() -> list[dict[str, Any]]:
        return [r for r in log_() if r["kind"] == "reading" and r["sensor"] == "ph-1"]

    async with EzoPtyDevice.for_river("ph", port, seed=7, delay_scale=0.02) as device:
        cfg = station(tmp_path, port)
        daemon = start(cfg, procs)
        await wait_for("three pH readings", lambda: len(readings()) >= 3)
        before = device.device_path
        await device.unplug()  # the adapter is pulled: the pty is gone, and its udev name
        pulled_at = format_time(time.time_ns())
        assert not port.exists()

        def gaps_since_pull() -> list[dict[str, Any]]:
            return [
                r
                for r in log_()
                if r["kind"] == "gap" and r["sensor"] == "ph-1" and r["to"] > pulled_at
            ]

        await wait_for("a gap record after the pull", gaps_since_pull, within=15)
        n = len(readings())
        # Re-enumerated under another device node (ttyUSB0 comes back as ttyUSB1): the old
        # node is taken while the new pty is made, and the symlink now points elsewhere.
        master, slave, _ = open_raw_pty()
        try:
            await device.replug()  # a new pty, the same name
        finally:
            os.close(master)
            os.close(slave)
        assert device.device_path != before and port.resolve() == Path(device.device_path)
        await wait_for("readings again", lambda: len(readings()) >= n + 3, within=20)
        assert daemon.poll() is None  # the same process: no restart
        daemon.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(daemon.wait, 20) == 0

    log = log_()
    boots = [r for r in log if r["kind"] == "event" and r["event"] == "boot"]
    assert len(boots) == 1
    gaps = gaps_since_pull()
    reasons = {g["reason"] for g in gaps}
    assert all(reasons) and reasons != {"silent"}, reasons  # the driver said why
    # The silence is covered from the last reading before the pull to the first after.
    ph = [r for r in log if r.get("sensor") == "ph-1"]
    first_gap = ph.index(gaps[0])
    last_before, first_after = ph[first_gap - 1], ph[ph.index(gaps[-1]) + 1]
    assert last_before["kind"] == "reading" and first_after["kind"] == "reading"
    assert gaps[0]["from"] == last_before["time"]
    assert gaps[-1]["to"] == first_after["time"]
    for a, b in itertools.pairwise(gaps):
        assert a["to"] == b["from"]
    print(f"gap reasons after the pull: {sorted(reasons)}; {len(gaps)} gap records")

    returncode, report = export_and_verify(cfg, trust)
    assert report["failure_count"] == 0, report["failures"]
    assert returncode == 3
    spans = report["sensors"]["ph-1"]["gap_spans"]
    assert any(s["reason"] in reasons for s in spans)
