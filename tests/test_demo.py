"""The README's demo, as a new user runs it: `riverseal-demo` ends with a VERIFIED bundle.

VERIFIED is the top verdict level: the regulator's trust file, nothing wrong, and
anchors checked independently — here RFC 3161 tokens from the demo's local TSA,
checked against its root by the command the demo prints.
"""

from __future__ import annotations

import ast
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

LEVELS = ("VERIFIED", "AUTHENTIC", "UNTRUSTED KEY", "FAILED", "FORKED")
REPO = Path(__file__).resolve().parents[1]


def demo_command() -> str:
    """The console script scripts/setup installs beside this python (what scripts/demo runs)."""
    command = shutil.which("riverseal-demo", path=str(Path(sys.executable).parent))
    if command is None:
        pytest.fail("no riverseal-demo console script beside python: run scripts/setup")
    return command


def demo(out: Path, seconds: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [demo_command(), "--seconds", str(seconds), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_demo_ends_verified_and_its_printed_command_agrees(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    t0 = time.monotonic()
    run = demo(out, 10)
    elapsed = time.monotonic() - t0
    assert run.returncode == 0, run.stdout + run.stderr
    assert elapsed < 40
    lines = run.stdout.splitlines()
    verdicts = [line for line in lines if line.startswith(LEVELS)]
    assert len(verdicts) == 1, run.stdout
    assert verdicts[0].startswith("VERIFIED: "), run.stdout
    for sensor in ("ph-1", "do-1", "ec-1", "orp-1", "temp-1"):
        assert sensor in run.stdout
    assert "rejected: 1 garbage, 1 error-reply" in run.stdout  # the injected faults, handled
    assert "local stand-in for an independent authority" in run.stdout
    recorded = [line for line in lines if line.startswith("recorded:")]
    assert recorded
    assert all("(rfc3161:local-tsa)" in line for line in recorded)
    assert (out / "bundle.tar").is_file()

    # The command the demo printed, run as a user would (the TSA has stopped by now).
    (command,) = [line for line in lines if line.startswith("verify it yourself:")]
    argv = shlex.split(command.partition(":")[2])
    assert argv[0] == "ledger-verify"
    assert argv[2::2] == ["--trust", "--tsa-roots"]
    assert [Path(a).resolve() for a in argv[1::2]] == [
        out.resolve() / "bundle.tar",
        out.resolve() / "station" / "trust.txt",
        out.resolve() / "tsa-roots.pem",
    ]
    verify = subprocess.run(
        [sys.executable, "-m", "ledger_client", *argv[1:], "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    verdict = json.loads(verify.stdout)
    assert verdict["level"] == "verified"
    assert verdict["verified"]
    assert verdict["entries"] >= 30
    assert verdict["failures"] == []
    tsa_anchors = [a for a in verdict["anchors"] if a["backend"] == "rfc3161:local-tsa"]
    assert any(a["status"] == "verified" for a in tsa_anchors), verdict["anchors"]
    # the demo printed what the verifier says: the same bounds, entry for entry
    assert len(recorded) == min(6, len(verdict["recorded_by"]))  # the demo prints up to 6
    for line, r in zip(recorded, verdict["recorded_by"], strict=False):
        assert f"entries {r['first']}–{r['last']} no later than {r['time']}" in line

    # Without the TSA's root nothing is checked independently: one level down, exit 3.
    undated = subprocess.run(
        [sys.executable, "-m", "ledger_client", *argv[1:4], "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert undated.returncode == 3, undated.stdout + undated.stderr
    assert json.loads(undated.stdout)["level"] == "authentic-undated"

    # Running it again replaces the demo station, never anything else.
    again = demo(out, 3)
    assert again.returncode == 0, again.stdout + again.stderr


def test_demo_refuses_an_out_directory_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "station").mkdir()
    (tmp_path / "station" / "mine.txt").write_text("keep me")
    run = demo(tmp_path, 1)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "was not made by `riverseal-demo`; choose --out" in run.stderr
    assert (tmp_path / "station" / "mine.txt").read_text() == "keep me"


def test_the_box_package_imports_no_simulator_and_has_no_demo() -> None:
    """The demo lives in riverseal_demo; the gateway a box runs carries no simulator."""
    for path in sorted((REPO / "gateway").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in {"simulators", "riverseal_demo"}, (path, name)
    gateway = subprocess.run(
        [sys.executable, "-m", "gateway", "demo"], capture_output=True, text=True, check=False
    )
    assert gateway.returncode == 2
    assert "invalid choice: 'demo'" in gateway.stderr
