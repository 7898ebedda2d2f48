"""The README's demo, as a new user runs it: `gateway demo` ends with a verified bundle."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path


def test_demo_ends_with_a_verified_bundle_in_under_a_minute(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    t0 = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--seconds", "10", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    elapsed = time.monotonic() - t0
    assert run.returncode == 0, run.stdout + run.stderr
    assert elapsed < 60
    assert "VERIFIED" in run.stdout
    for sensor in ("ph-1", "do-1", "ec-1", "orp-1", "temp-1"):
        assert sensor in run.stdout
    assert "rejected: 1 garbage, 1 error-reply" in run.stdout  # the injected faults, handled
    bundle = out / "bundle.json"
    verify = subprocess.run(
        [
            sys.executable,
            "-m",
            "ledger_client",
            str(bundle),
            "--trust",
            str(out / "station" / "trust.txt"),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0
    verdict = json.loads(verify.stdout)
    assert verdict["verified"]
    assert verdict["entries"] >= 30
    assert verdict["failures"] == []
    # Running it again replaces the demo station, never anything else.
    again = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--seconds", "3", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 0, again.stderr
