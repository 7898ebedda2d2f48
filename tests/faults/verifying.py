"""Export a station's log with ``gateway export`` and check it with ``ledger-verify``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.gateway.daemon_procs import GATEWAY

__all__ = ["export_and_verify"]


def export_and_verify(cfg: Path, trust: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    """The verifier's exit status and ``--json`` report on a v2 bundle of ``cfg``'s log."""
    bundle = cfg.parent / "bundle.tar"
    subprocess.run(
        [*GATEWAY, "export", "--config", str(cfg), "--out", str(bundle)],
        check=True,
        capture_output=True,
    )
    command = [sys.executable, "-m", "ledger_client", str(bundle), "--trust", str(trust)]
    verify = subprocess.run(
        [*command, "--json", *extra],
        capture_output=True,
        text=True,
        check=False,
    )
    report: dict[str, Any] = json.loads(verify.stdout)
    return verify.returncode, report
