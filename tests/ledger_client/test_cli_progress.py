"""ledger-verify shows progress on a terminal, and only there.

Run as a real process whose stderr is a pseudo-terminal (os.openpty), as a
regulator's shell gives it: the progress line (entries done, rate, time left)
appears, rewritten in place, and is cleared before the report; with --json, or
when stderr is a pipe, nothing but the report is written.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.ledger_client.lc_bundles import DEVICE, ORIGIN, BundleMaker
from tests.ledger_client.v2_bundles import manifest_for, notes_for, v2_members, write_container


def _bundle(tmp_path: Path) -> Path:
    m = BundleMaker()
    records = [m.reading(s) for _ in range(200) for s in ("ph-1", "do-1", "temp-1")]
    entries = [e.entry for e in m.build(records, [600]).entries]
    notes = notes_for(m.signer, ORIGIN, entries, [300, 600])
    manifest = manifest_for(m.signer, ORIGIN, DEVICE, notes)
    return write_container(tmp_path / "b.tar", v2_members(entries, manifest, 600))


def _run(args: list[str], *, tty: bool) -> tuple[int, str, str]:
    cmd = [sys.executable, "-m", "ledger_client", *args]
    if not tty:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        return p.returncode, p.stdout, p.stderr
    primary, secondary = os.openpty()
    try:
        p = subprocess.run(
            cmd, stdout=subprocess.PIPE, stderr=secondary, text=True, timeout=60, check=False
        )
        os.close(secondary)
        chunks = []
        while True:
            try:
                data = os.read(primary, 65536)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(primary)
    return p.returncode, p.stdout, b"".join(chunks).decode()


def test_progress_appears_on_a_terminal_and_is_cleared(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    rc, out, err = _run([str(bundle), "--jobs", "1"], tty=True)
    assert rc == 4, out + err  # no --trust: UNTRUSTED KEY
    assert "600 / 600 entries" in err
    assert "/s" in err and "ETA 0:00" in err
    assert err.endswith("\r" + " " * 64 + "\r")  # the line is wiped before the report
    assert "UNTRUSTED KEY: 600 entries" in out


def test_no_progress_with_json_or_without_a_terminal(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    rc, out, err = _run([str(bundle), "--json"], tty=True)
    assert rc == 4
    assert err == ""
    assert out.lstrip().startswith("{")
    rc, out, err = _run([str(bundle)], tty=False)
    assert rc == 4
    assert err == ""
    assert "UNTRUSTED KEY" in out
