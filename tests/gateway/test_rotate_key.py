"""``gateway rotate-key``: a new device key, the hand-over signed by the old one.

Real key files, a real log database written by the real Log (with a fake
clock), real exports, and ``ledger-verify`` (its ``main``) with trust files.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main as gateway
from gateway.errors import KeyFileError
from gateway.evidence import build_evidence
from gateway.export import export_bundle_v1
from gateway.export_v2 import export_bundle_v2
from gateway.keys import (
    DeviceKey,
    create_device_key,
    create_next_device_key,
    load_device_key,
    next_key_path,
    peek_vkey,
    retired_key_path,
)
from gateway.log import Log
from gateway.pipeline import Reading, Value
from gateway.rotate import (
    RotationError,
    RotationResult,
    finish_interrupted_rotation,
    record_rotation,
    refuse_if_running,
    rotate_device_key,
    running_daemon,
)
from gateway.store import Store
from ledger_client.bundle import DeviceKey as BundleKey
from ledger_client.checkpoint import open_checkpoint
from ledger_client.cli import main as ledger_verify
from ledger_client.errors import LedgerClientError
from ledger_client.records import format_time, parse_entry

T0 = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
S = 10**9
ROTATE_AT = T0 + 20 * S + 123_456_789  # the rotation's clock: not on a microsecond boundary


class FakeClock:
    def __init__(self, now_ns: int) -> None:
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns


def readings(first: int, last: int) -> list[Reading]:
    """Reading j of ph-1, received at T0 + j seconds."""
    return [
        Reading("ph-1", (Value("ph", 7.0 + j / 100, "pH"),), T0 + j * S) for j in range(first, last)
    ]


async def log_readings(db: Path, key: DeviceKey, first: int, last: int) -> None:
    """Readings ``first``–``last - 1`` logged and checkpointed, the clock at the last."""
    clock = FakeClock(T0 + first * S)
    async with Store(db) as store:
        log = Log(store, key, clock=clock, clock_state=lambda: "synced")
        await log.open()
        clock.now_ns = T0 + (last - 1) * S
        await log.append(readings(first, last), checkpoint=True)


@dataclass
class Box:
    key_file: Path
    db: Path
    old: DeviceKey
    new: DeviceKey
    rotation: RotationResult


async def rotated_box(tmp_path: Path) -> Box:
    """Readings 0–9, a rotation at ROTATE_AT, readings 30–39 under the new key."""
    key_file, db = tmp_path / "device.key", tmp_path / "data" / "log.sqlite"
    old = create_device_key(key_file)
    await log_readings(db, old, 0, 10)
    rotation = await rotate_device_key(
        key_file, db, clock=FakeClock(ROTATE_AT), clock_state=lambda: "synced"
    )
    new = load_device_key(key_file)
    await log_readings(db, new, 30, 40)
    return Box(key_file, db, old, new, rotation)


def write_trust(path: Path, lines: list[str]) -> Path:
    path.write_text("# riverseal test trust file\n" + "\n".join(lines) + "\n")
    return path


def verify(source: Path, trust: Path | None, capsys: pytest.CaptureFixture[str]) -> Any:
    """ledger-verify SOURCE [--trust FILE] --json: its report."""
    capsys.readouterr()
    args = [str(source), "--json", "--jobs", "1"]
    if trust is not None:
        args += ["--trust", str(trust)]
    status = ledger_verify(args)
    report = json.loads(capsys.readouterr().out)
    assert status != 2, report  # readable
    assert (status == 1) == (report["failure_count"] > 0), (status, report["failure_count"])
    return report


async def export_v2(box: Box, out: Path) -> Path:
    async with Store(box.db) as store:
        log = Log(store, box.new, clock=FakeClock(T0 + 50 * S))
        await log.open()
        await export_bundle_v2(log, out, clock=FakeClock(T0 + 50 * S))
    return out


async def test_rotation_keeps_name_and_device_and_prints_the_windows(tmp_path: Path) -> None:
    box = await rotated_box(tmp_path)
    old, new, r = box.old, box.new, box.rotation
    assert new.origin == old.origin == f"riverseal/{old.device_id}"
    assert new.device_id == old.device_id
    assert new.vkey != old.vkey
    # The old key's window ends at the event's time (truncated to µs), the new one's
    # starts a microsecond later; the first key's start stays open.
    until = format_time(ROTATE_AT)
    start = format_time(ROTATE_AT + 1000)
    assert until == "2026-01-01T00:00:20.123456Z"
    assert start == "2026-01-01T00:00:20.123457Z"
    assert [k.to_json() for k in r.history] == [
        {"vkey": old.vkey, "valid_from": None, "valid_until": until},
        {"vkey": new.vkey, "valid_from": start, "valid_until": None},
    ]
    assert r.trust_lines() == [f"key {old.vkey} - {until}", f"key {new.vkey} {start}"]
    # The old key file is kept, private, under its key ID; nothing is left in .next.
    retired = retired_key_path(box.key_file, old.key_id_hex)
    assert r.retired == retired
    assert load_device_key(retired) == old
    assert stat.S_IMODE(retired.stat().st_mode) == 0o600
    assert stat.S_IMODE(box.key_file.stat().st_mode) == 0o600
    assert not next_key_path(box.key_file).exists()


async def test_the_rotation_event_and_its_checkpoint_are_signed_by_the_old_key(
    tmp_path: Path,
) -> None:
    box = await rotated_box(tmp_path)
    index = box.rotation.index
    assert index == 10
    async with Store(box.db) as store:
        rows = [r async for r in store.entries(0, await store.size() - 1)]
        cps = await store.checkpoints()
        assert await store.get_meta("vkey") == box.new.vkey  # "vkey" is the current key
    event = parse_entry(rows[index].data)
    assert event.rec["kind"] == "event"
    assert event.rec["event"] == "key-rotation"
    assert event.rec["time"] == format_time(ROTATE_AT)
    assert event.rec["key"] == box.old.key_id_hex
    assert event.rec["detail"] == {
        "old_key": box.old.vkey,
        "new_key": box.new.vkey,
        "valid_from": format_time(ROTATE_AT + 1000),
    }
    assert event.verify_signature(box.old.signer.verifier())
    assert not event.verify_signature(box.new.signer.verifier())
    # The entries before and the event are the old key's, the ones after the new key's.
    keys = [parse_entry(r.data).rec["key"] for r in rows]
    assert keys == [box.old.key_id_hex] * 11 + [box.new.key_id_hex] * 10
    # The checkpoint over the event is the old key's; the next one the new key's.
    by_size = {c.size: c.note for c in cps}
    assert sorted(by_size) == [10, 11, 21]
    open_checkpoint(by_size[11], [box.old.signer.verifier()])
    open_checkpoint(by_size[21], [box.new.signer.verifier()])
    with pytest.raises(LedgerClientError):
        open_checkpoint(by_size[21], [box.old.signer.verifier()])


async def test_before_and_after_verify_under_one_trust_file_with_both_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    box = await rotated_box(tmp_path)
    trust = write_trust(tmp_path / "trust.txt", box.rotation.trust_lines())
    v2 = await export_v2(box, tmp_path / "bundle.tar")
    v1 = tmp_path / "bundle.json"
    evidence = tmp_path / "entry-0.tlog-proof"
    async with Store(box.db) as store:
        log = Log(store, box.new, clock=FakeClock(T0 + 50 * S))
        await log.open()
        await export_bundle_v1(log, v1, clock=FakeClock(T0 + 50 * S))
        evidence.write_bytes((await build_evidence(log, 0)).dumps())
    # Every export lists both keys, oldest first, with their windows (the first key's
    # window starts at the log's creation, as it always has).
    expected = [
        BundleKey(box.old.vkey, format_time(T0), format_time(ROTATE_AT)).to_json(),
        BundleKey(box.new.vkey, format_time(ROTATE_AT + 1000), None).to_json(),
    ]
    assert json.loads(v1.read_text())["keys"] == expected
    for source, entries in ((v2, 21), (v1, 21), (evidence, 1)):
        report = verify(source, trust, capsys)
        assert report["failure_count"] == 0, (source.name, report["failures"])
        assert report["entries"] == entries
        assert report["keys_trusted"] is True
    # The bundle's own windows are right too (no trust file: its keys are used).
    report = verify(v2, None, capsys)
    assert report["failure_count"] == 0, report["failures"]


async def test_an_old_key_signature_after_its_window_fails_naming_the_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    box = await rotated_box(tmp_path)
    async with Store(box.db) as store:
        log = Log(store, box.new, clock=FakeClock(T0 + 41 * S), clock_state=lambda: "synced")
        await log.open()
        # Test-only: a leaked retired key signs one more reading, dated after its window.
        log.key = box.old
        log._base["key"] = box.old.key_id_hex
        [forged] = await log.append(readings(41, 42))
        log.key = box.new
        log._base["key"] = box.new.key_id_hex
        await log.append(readings(42, 44), checkpoint=True)
    assert forged == 21
    trust = write_trust(tmp_path / "trust.txt", box.rotation.trust_lines())
    report = verify(await export_v2(box, tmp_path / "bundle.tar"), trust, capsys)
    assert report["failure_count"] == 1, report["failures"]
    [failure] = report["failures"]
    assert failure["entry"] == forged
    assert f"outside the validity window of key {box.old.key_id_hex}" in failure["reason"]


async def test_with_only_the_old_key_trusted_the_entries_after_the_rotation_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    box = await rotated_box(tmp_path)
    trust = write_trust(tmp_path / "trust.txt", box.rotation.trust_lines()[:1])
    report = verify(await export_v2(box, tmp_path / "bundle.tar"), trust, capsys)
    assert report["failure_count"] > 0
    untrusted = {f["entry"] for f in report["failures"] if "not in the trust list" in f["reason"]}
    assert untrusted == set(range(11, 21))
    named = {f["entry"] for f in report["failures"] if f["entry"] is not None}
    assert named == untrusted  # nothing signed by the old key fails


async def test_an_interrupted_rotation_is_finished(tmp_path: Path) -> None:
    key_file, db = tmp_path / "device.key", tmp_path / "data" / "log.sqlite"
    old = create_device_key(key_file)
    await log_readings(db, old, 0, 10)
    # Steps 1 and 2 done, then the power went: the store names the key in .next.
    recorded = await record_rotation(key_file, db, clock=FakeClock(ROTATE_AT))
    pending = next_key_path(key_file)
    assert peek_vkey(pending) == recorded.history[-1].vkey
    assert load_device_key(key_file) == old
    # The old key is retired: a log refuses to sign with it.
    async with Store(db) as store:
        with pytest.raises(KeyFileError, match="retired"):
            await Log(store, old).open()
    done = await finish_interrupted_rotation(key_file, db)
    assert done is not None
    assert done.resumed
    assert done.history == recorded.history
    new = load_device_key(key_file)
    assert new.vkey == recorded.history[-1].vkey
    assert not pending.exists()
    assert done.retired == retired_key_path(key_file, old.key_id_hex)
    assert load_device_key(done.retired) == old
    await log_readings(db, new, 30, 32)  # the new key signs
    assert await finish_interrupted_rotation(key_file, db) is None  # nothing left to do


def test_a_rotation_interrupted_between_the_renames_is_finished_by_rotate_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    box_dir = tmp_path / "box"
    assert gateway(["init", str(box_dir)]) == 0
    key_file, db = box_dir / "device.key", box_dir / "data" / "log.sqlite"
    old = load_device_key(key_file)
    asyncio.run(log_readings(db, old, 0, 10))
    recorded = asyncio.run(record_rotation(key_file, db, clock=FakeClock(ROTATE_AT)))
    retired = retired_key_path(key_file, old.key_id_hex)
    key_file.rename(retired)  # the first rename of step 3 done, the second not
    capsys.readouterr()
    assert gateway(["rotate-key", "--config", str(box_dir / "gateway.toml")]) == 0
    out = capsys.readouterr().out
    assert "finished an interrupted rotation" in out
    assert load_device_key(key_file).vkey == recorded.history[-1].vkey
    assert load_device_key(retired) == old
    # It finished that rotation and began no other.
    assert out.splitlines()[-2:] == recorded.trust_lines()
    with sqlite3.connect(db) as conn:
        [(keys,)] = conn.execute("SELECT value FROM meta WHERE key = 'keys'").fetchall()
    assert len(json.loads(keys)) == 2


async def test_a_next_key_the_store_does_not_name_is_deleted(tmp_path: Path) -> None:
    key_file, db = tmp_path / "device.key", tmp_path / "data" / "log.sqlite"
    old = create_device_key(key_file)
    await log_readings(db, old, 0, 10)
    stale = create_next_device_key(key_file, old)  # step 1 only, then the power went
    r = await rotate_device_key(key_file, db, clock=FakeClock(ROTATE_AT))
    assert not r.resumed
    assert stale.vkey not in [k.vkey for k in r.history]
    assert load_device_key(key_file).vkey == r.history[-1].vkey
    assert not next_key_path(key_file).exists()


async def test_a_key_outside_the_history_is_refused(tmp_path: Path) -> None:
    box = await rotated_box(tmp_path)
    stranger = DeviceKey(box.old.device_id, create_next_device_key(tmp_path / "x", box.old).signer)
    async with Store(box.db) as store:
        with pytest.raises(KeyFileError, match="not a key of log database"):
            await Log(store, stranger).open()
        with pytest.raises(KeyFileError, match="retired"):
            await Log(store, box.old).open()


def test_the_command_refuses_while_the_daemon_runs_and_prints_the_trust_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    box_dir = tmp_path / "box"
    assert gateway(["init", str(box_dir)]) == 0
    config = str(box_dir / "gateway.toml")
    key_file = box_dir / "device.key"
    old = load_device_key(key_file)
    capsys.readouterr()
    assert gateway(["rotate-key", "--config", config]) == 1
    assert "never run here" in capsys.readouterr().err
    asyncio.run(log_readings(box_dir / "data" / "log.sqlite", old, 0, 3))
    status = box_dir / "data" / "status.json"
    # A live process named in status.json: this one.
    status.write_text(json.dumps({"time": format_time(time.time_ns()), "pid": os.getpid()}))
    assert running_daemon(status.parent) == os.getpid()
    assert gateway(["rotate-key", "--config", config]) == 1
    err = capsys.readouterr().err
    assert f"pid {os.getpid()}" in err
    assert "stop the service first" in err
    assert load_device_key(key_file) == old  # nothing happened
    # The pid of a process that has ended does not count.
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    status.write_text(json.dumps({"time": format_time(time.time_ns()), "pid": int(done.stdout)}))
    refuse_if_running(status.parent)
    assert gateway(["rotate-key", "--config", config]) == 0
    out = capsys.readouterr().out.splitlines()
    new = load_device_key(key_file)
    assert new.device_id == old.device_id
    assert out[-2].startswith(f"key {old.vkey} - ")
    assert out[-1].startswith(f"key {new.vkey} ")
    assert any("destroy it" in line for line in out)
    status.write_text(json.dumps({"time": format_time(time.time_ns()), "pid": os.getpid()}))
    with pytest.raises(RotationError, match="stop the service first"):
        refuse_if_running(status.parent)
