"""The disk filling up under a real ``gateway run``: back-pressure, no loss, recovery by itself.

The data directory is a 6 MiB tmpfs the test mounts (and unmounts, whatever happens). An
MQTT node publishes QoS 1 readings and keeps every seq the broker acknowledged. Once the
gateway has logged some, a filler file takes every free byte of the tmpfs: the gateway's
next commit meets SQLITE_FULL. It must stay up, refuse (not acknowledge: the broker keeps
the messages for its persistent session), feed the watchdog (a restart would not help),
say ``storage full`` in sd_notify ``STATUS=`` and in status.json; once the filler is
removed it must resume by itself, log a ``storage-full`` gap, and in the end hold every
acknowledged reading exactly once in a log that exports and verifies.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import pytest

from tests.gateway.daemon_procs import GATEWAY, records, start
from tests.gateway.test_sd_notify import Manager

LEDGER_VERIFY = [sys.executable, "-m", "ledger_client"]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 6 MiB tmpfs mounted for this test; unmounted at its end, even a failed one."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        # Lazy: a gateway the test failed to stop may still hold files open in it.
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(disk: Path) -> int:
    """Take every free byte of ``disk`` with a file; its size."""
    size = 0
    with (disk / "filler").open("wb", buffering=0) as f:
        block = b"\0" * 65536
        try:
            while True:
                size += f.write(block)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        for small in (4096, 512, 1):  # the last part-blocks too
            with contextlib.suppress(OSError):
                while True:
                    size += f.write(b"\0" * small)
    return size


def station(tmp_path: Path, data_dir: Path, broker: tuple[str, int], topic: str) -> Path:
    subprocess.run([*GATEWAY, "init", str(tmp_path)], check=True, capture_output=True)
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        f'[device]\nkey_file = "device.key"\ndata_dir = "{data_dir}"\n'
        "[log]\ncheckpoint_every_entries = 100\ncheckpoint_every_seconds = 0.5\n"
        "[anchor.local]\nenabled = true\n"
        # No reserve: the test wants the disk itself to say it is full.
        "[storage]\nreserve_mb = 0\nretry_max_seconds = 1\n"
        f'[mqtt]\nhost = "{broker[0]}"\nport = {broker[1]}\nclient_id = "{topic}-gw"\n'
        f'[[sensor]]\nid = "node-1"\ndriver = "mqtt"\ntopic = "{topic}"\ninterval_s = 1\n'
    )
    return cfg


async def publish(
    broker: tuple[str, int], topic: str, acked: set[int], stop: asyncio.Event
) -> None:
    """QoS 1, 20 a second; a seq joins ``acked`` once the broker's PUBACK for it came."""
    async with aiomqtt.Client(broker[0], broker[1], identifier=f"{topic}-node") as client:
        seq = 0
        while not stop.is_set():
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            body = {"seq": seq, "time": now, "values": [{"q": "pH", "v": 7.0, "u": "[pH]"}]}
            await client.publish(topic, json.dumps(body), qos=1)
            acked.add(seq)
            seq += 1
            await asyncio.sleep(0.05)


def logged_seqs(db: Path) -> list[int]:
    return [int(r["src_seq"]) for r in records(db) if r["kind"] == "reading"]


async def until(
    what: str, check: object, proc: subprocess.Popen[bytes], log: Path, s: float
) -> None:
    deadline = time.monotonic() + s
    while not check():  # type: ignore[operator]
        assert proc.poll() is None, f"the gateway exited:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{what}: not within {s} s\n{log.read_text()[-3000:]}"
        await asyncio.sleep(0.1)


@pytest.mark.slow  # about 15 s alone, twice that on a loaded machine
async def test_a_full_disk_is_back_pressure_and_the_gateway_resumes_by_itself(
    tmp_path: Path,
    small_disk: Path,
    mosquitto: tuple[str, int],
    procs: list[subprocess.Popen[bytes]],
) -> None:
    topic = f"storage-full-{uuid.uuid4().hex[:8]}"
    data = small_disk / "data"
    cfg = station(tmp_path, data, mosquitto, topic)
    db = data / "log.sqlite"
    log = tmp_path / "gateway.log"
    manager = Manager(f"@riverseal-test-{uuid.uuid4().hex}")
    acked: set[int] = set()
    stop = asyncio.Event()
    try:
        proc = start(cfg, procs, {"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "1000000"})
        await manager.wait_for("READY=1", within=20)
        node = asyncio.create_task(publish(mosquitto, topic, acked, stop))
        await until("readings logged", lambda: len(logged_seqs(db)) >= 20, proc, log, 20)

        filled = await asyncio.to_thread(fill, small_disk)
        print(f"filler: {filled:,} bytes")

        def said_full() -> bool:
            return any("storage full" in ln for ln, _, _ in manager.lines("STATUS="))

        await until("STATUS= says storage full", said_full, proc, log, 30)
        full_at = time.monotonic()
        count_full = len(logged_seqs(db))
        await asyncio.sleep(3)  # refusing: still up, still fed, nothing new logged
        assert proc.poll() is None
        pings = [at for _, _, at in manager.lines("WATCHDOG=1") if at > full_at]
        assert len(pings) >= 4, "the watchdog was starved while the disk was full"
        assert len(logged_seqs(db)) == count_full
        assert len(acked) > count_full  # the broker took readings the gateway did not
        status = json.loads((data / "status.json").read_text())
        assert status["storage"]["state"] == "full", status["storage"]
        assert "full" in status["storage"]["last_error"]

        (small_disk / "filler").unlink()
        await until(
            "a storage-full gap",
            lambda: any(r.get("reason") == "storage-full" for r in records(db)),
            proc,
            log,
            30,
        )
        await asyncio.sleep(1)
        stop.set()
        await node
        deadline = time.monotonic() + 60
        while missing := sorted(acked - set(logged_seqs(db))):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, (
                f"{len(missing)} acknowledged readings not logged: {missing[:20]}\n"
                + log.read_text()[-3000:]
            )
            await asyncio.sleep(0.2)

        def status_clear() -> bool:  # status.json is rewritten every 5 s
            storage = json.loads((data / "status.json").read_text())["storage"]
            return storage["state"] != "full" and storage["since"] is None

        await until("status.json says the storage is clear", status_clear, proc, log, 15)
        assert not any("storage full" in ln for ln, _, _ in manager.lines("STATUS=")[-1:])
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        stop.set()
        manager.close()

    seqs = logged_seqs(db)
    assert len(seqs) == len(set(seqs)), "a reading was logged twice"
    assert set(seqs) >= acked
    recs = records(db)
    gap = next(r for r in recs if r.get("reason") == "storage-full")
    assert gap["sensor"] == "node-1" and gap["from"] < gap["to"]
    text = log.read_text()
    assert "Traceback" not in text and "ExceptionGroup" not in text

    bundle = tmp_path / "bundle.tar"
    subprocess.run(
        [*GATEWAY, "export", "--config", str(cfg), "--out", str(bundle)],
        check=True,
        capture_output=True,
    )
    verify = subprocess.run(
        [*LEDGER_VERIFY, str(bundle), "--trust", str(tmp_path / "trust.txt"), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    report = json.loads(verify.stdout)
    assert report["failure_count"] == 0, report["failures"][:10]
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
        assert c.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        # The whole log was exported: retention's exported mark says how far.
        mark = c.execute("SELECT value FROM meta WHERE key = 'exported_size'").fetchone()
    assert mark is not None and int(mark[0]) == report["entries"] == len(records(db))


async def test_a_disk_too_full_to_open_the_log_is_waited_for_not_a_crash_loop(
    tmp_path: Path,
    small_disk: Path,
    mosquitto: tuple[str, int],
    procs: list[subprocess.Popen[bytes]],
) -> None:
    """After a clean stop SQLite has removed its WAL files; on a full disk it cannot make
    them again, so the log cannot even be opened. The daemon waits, up and fed, and
    starts by itself (its boot event written) once there is room."""
    topic = f"storage-open-{uuid.uuid4().hex[:8]}"
    data = small_disk / "data"
    cfg = station(tmp_path, data, mosquitto, topic)
    db = data / "log.sqlite"
    log = tmp_path / "gateway.log"
    proc = start(cfg, procs)
    await until("a first boot", lambda: len(records(db)) >= 1, proc, log, 20)
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 30) == 0
    assert not (data / "log.sqlite-wal").exists()
    await asyncio.to_thread(fill, small_disk)

    manager = Manager(f"@riverseal-test-{uuid.uuid4().hex}")
    try:
        proc = start(cfg, procs, {"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "1000000"})
        await manager.wait_for("READY=1", within=20)

        def waiting() -> bool:
            return any("cannot be opened" in ln for ln, _, _ in manager.lines("STATUS="))

        await until("STATUS= says the log cannot be opened", waiting, proc, log, 20)
        t0 = time.monotonic()
        await asyncio.sleep(2.5)
        assert proc.poll() is None
        assert len([at for _, _, at in manager.lines("WATCHDOG=1") if at > t0]) >= 3
        # (Nothing can read the log meanwhile either: a reader needs the WAL files too.)

        (small_disk / "filler").unlink()
        await until(
            "the second boot event",
            lambda: sum(r.get("event") == "boot" for r in records(db)) == 2,
            proc,
            log,
            30,
        )
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        manager.close()
    events = [r["event"] for r in records(db) if r["kind"] == "event"]
    assert events == ["boot", "stop", "boot", "stop"], events  # one boot per start, no more
    assert "Traceback" not in log.read_text()
