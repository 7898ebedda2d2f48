"""sd_notify from a real ``gateway run`` to a unix datagram socket the test binds as
``$NOTIFY_SOCKET`` (gateway/notify.py), read with the sender's credentials the kernel
attaches, as systemd reads them for ``NotifyAccess=main``.

A quiet station (a node that never publishes) says ``READY=1`` once its boot event is
committed, a one-line ``STATUS=``, ``WATCHDOG=1`` every half ``$WATCHDOG_USEC`` (nothing to
commit is healthy), and ``STOPPING=1`` on SIGTERM. A station whose commits are held (the
test keeps SQLite's write lock on the log, so the writer's commit waits in the disk layer)
withholds ``WATCHDOG=1`` and says why in ``STATUS=``, and pings again once they go through.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import pytest

from gateway.keys import create_device_key
from gateway.notify import Notifier
from tests.gateway.daemon_procs import records, start

STATUS_LINE = re.compile(
    r"log \d+ entries, 1 sensors( \(1 silent: node-1 [a-z-]+\))?, "
    r"(last checkpoint \d+|no checkpoint yet), (anchors ok|no anchors)"
)


@dataclass(frozen=True)
class Datagram:
    pid: int
    lines: tuple[str, ...]
    at: float


class Manager:
    """Plays systemd's side: a bound datagram socket, read with SO_PASSCRED."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.1)
        self.got: list[Datagram] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        creds = struct.calcsize("3i")
        while not self._stop.is_set():
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(creds))
            except TimeoutError:
                continue
            pid = -1
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", payload[:creds])[0]
            with self._lock:
                self.got.append(Datagram(pid, tuple(data.decode().split("\n")), time.monotonic()))

    def lines(self, prefix: str = "") -> list[tuple[str, int, float]]:
        with self._lock:
            return [(ln, d.pid, d.at) for d in self.got for ln in d.lines if ln.startswith(prefix)]

    async def wait_for(self, line: str, within: float = 15.0) -> float:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for ln, _, at in self.lines():
                if ln == line:
                    return at
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {line!r} within {within} s; got {self.lines()}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path: a unix socket's path must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="rs-", dir="/tmp"))
    yield path
    shutil.rmtree(path)


def station(tmp_path: Path, broker: tuple[str, int], topic: str) -> Path:
    create_device_key(tmp_path / "device.key")
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        '[device]\nkey_file = "device.key"\ndata_dir = "data"\n'
        "[log]\ncheckpoint_every_entries = 50\ncheckpoint_every_seconds = 0.5\n"
        f'[mqtt]\nhost = "{broker[0]}"\nport = {broker[1]}\nclient_id = "{topic}-gw"\n'
        f'[[sensor]]\nid = "node-1"\ndriver = "mqtt"\ntopic = "{topic}"\ninterval_s = 0.5\n'
    )
    return cfg


@contextlib.asynccontextmanager
async def node_publishing(broker: tuple[str, int], topic: str) -> AsyncIterator[None]:
    async def publish(client: aiomqtt.Client) -> None:
        seq = 0
        while True:
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            body = {"seq": seq, "time": now, "values": [{"q": "pH", "v": 7.0, "u": "[pH]"}]}
            await client.publish(topic, json.dumps(body), qos=1)
            seq += 1
            await asyncio.sleep(0.1)

    async with aiomqtt.Client(broker[0], broker[1], identifier=f"{topic}-node") as client:
        task = asyncio.create_task(publish(client))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_a_quiet_station_is_ready_reports_status_pings_and_says_stopping(
    tmp_path: Path, mosquitto: tuple[str, int], procs: list[subprocess.Popen[bytes]]
) -> None:
    cfg = station(tmp_path, mosquitto, "sd-notify-quiet")
    manager = Manager(f"@riverseal-test-{uuid.uuid4().hex}")  # the abstract namespace
    try:
        proc = start(cfg, procs, {"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "1000000"})
        await manager.wait_for("READY=1")
        # Ready means running: the boot event is committed by then.
        assert [r["event"] for r in records(tmp_path / "data" / "log.sqlite")][:1] == ["boot"]
        # Nothing is published: the writer has nothing to commit and is healthy all the same.
        deadline = time.monotonic() + 10
        while len(manager.lines("WATCHDOG=1")) < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        pings = manager.lines("WATCHDOG=1")
        assert len(pings) >= 5
        assert all(pid == proc.pid for _, pid, _ in manager.lines())  # NotifyAccess=main
        gaps = sorted(b[2] - a[2] for a, b in itertools.pairwise(pings))
        assert gaps[0] > 0.3, gaps  # every half WATCHDOG_USEC, not faster...
        assert 0.4 < gaps[len(gaps) // 2] < 0.7, gaps  # ...and not slower (a loaded box may lag)
        statuses = [ln.removeprefix("STATUS=") for ln, _, _ in manager.lines("STATUS=")]
        assert statuses[0] == "starting: checking the log"
        running = [s for s in statuses if s.startswith("log ")]
        assert running
        assert all(STATUS_LINE.fullmatch(s) for s in running), running
        assert not any("watchdog held" in s for s in statuses)

        proc.send_signal(signal.SIGTERM)
        stopping = await manager.wait_for("STOPPING=1")
        assert proc.wait(timeout=20) == 0
        assert not [p for p in manager.lines("WATCHDOG=1") if p[2] > stopping]
        assert any(ln.startswith("STATUS=stopping") for ln, _, _ in manager.lines())
        ready_at = [at for ln, _, at in manager.lines() if ln == "READY=1"]
        assert len(ready_at) == 1
        assert ready_at[0] < stopping
    finally:
        manager.close()
    assert "Traceback" not in (tmp_path / "gateway.log").read_text()


async def test_held_commits_withhold_the_watchdog_and_it_comes_back(
    tmp_path: Path,
    short_dir: Path,
    mosquitto: tuple[str, int],
    procs: list[subprocess.Popen[bytes]],
) -> None:
    topic = "sd-notify-held"
    cfg = station(tmp_path, mosquitto, topic)
    db = tmp_path / "data" / "log.sqlite"
    manager = Manager(str(short_dir / "notify"))  # a socket path this time
    try:
        async with node_publishing(mosquitto, topic):
            proc = start(cfg, procs, {"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "1000000"})
            await manager.wait_for("READY=1")
            deadline = time.monotonic() + 10
            while len(manager.lines("WATCHDOG=1")) < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert len(manager.lines("WATCHDOG=1")) >= 3
            # Hold SQLite's write lock: the gateway's next commit waits (its busy timeout is
            # 10 s), as one stuck on a failing card would.
            with contextlib.closing(sqlite3.connect(db, timeout=5, isolation_level=None)) as c:
                c.execute("BEGIN IMMEDIATE")
                held_at = time.monotonic()
                await asyncio.sleep(3.5)
                c.execute("ROLLBACK")
                released_at = time.monotonic()
            pings = [at for _, _, at in manager.lines("WATCHDOG=1")]
            # Grace: a ping already on its way, and a batch still gathering (its hold limit is
            # half the sensor's 0.5 s interval) before the writer runs into the lock.
            during = [at for at in pings if held_at + 1.0 < at <= released_at]
            assert not during, f"pinged while the commit was held: {during}"
            statuses = [ln for ln, _, at in manager.lines("STATUS=") if at <= released_at]
            assert any("watchdog held: the log database did not answer" in s for s in statuses)
            # Once the commit goes through, pings and a clean status come back.
            again = time.monotonic() + 5
            while time.monotonic() < again:
                if any(at > released_at for _, _, at in manager.lines("WATCHDOG=1")):
                    break
                await asyncio.sleep(0.05)
            assert any(at > released_at for _, _, at in manager.lines("WATCHDOG=1"))
            n = sum(r["kind"] == "reading" for r in records(db))
            deadline = time.monotonic() + 10
            while sum(r["kind"] == "reading" for r in records(db)) < n + 3:
                assert time.monotonic() < deadline, "no readings after the release"
                await asyncio.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
        after = [ln for ln, _, at in manager.lines("STATUS=") if at > released_at]
        assert any("watchdog held" not in s for s in after)
        assert all(pid == proc.pid for _, pid, _ in manager.lines())
    finally:
        manager.close()
    log_text = (tmp_path / "gateway.log").read_text()
    assert "watchdog: not telling systemd all is well" in log_text
    assert "watchdog: ingest answers again" in log_text


def test_without_notify_socket_nothing_is_sent() -> None:
    quiet = Notifier.from_environment({})
    assert not quiet.enabled
    assert quiet.watchdog_interval_s is None
    assert not quiet.ready("x")
    assert not quiet.watchdog()
    # The watchdog belongs to the process systemd names, and WATCHDOG_USEC must be a number.
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "30000000"}
    assert Notifier.from_environment(env).watchdog_interval_s == 15.0
    mine = {**env, "WATCHDOG_PID": str(os.getpid())}
    assert Notifier.from_environment(mine).watchdog_interval_s == 15.0
    other = {**env, "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier.from_environment(other).watchdog_interval_s is None
    assert Notifier.from_environment({**env, "WATCHDOG_USEC": "soon"}).watchdog_interval_s is None
    assert not Notifier("relative/path").enabled


def test_a_missing_manager_is_logged_not_raised(
    short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gone = Notifier(str(short_dir / "nobody"))
    assert gone.enabled
    assert not gone.status("log 1 entries")
    assert not gone.watchdog()
    gone.close()
    warned = [r for r in caplog.records if "could not notify" in r.getMessage()]
    assert len(warned) == 1  # once, not per ping
    # A status is one line, whatever it is given.
    manager = Manager(str(short_dir / "notify"))
    try:
        n = Notifier(manager.address)
        assert n.status("two\nlines  here")
        n.close()
        deadline = time.monotonic() + 5
        while not manager.lines() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [ln for ln, _, _ in manager.lines()] == ["STATUS=two lines here"]
        assert manager.lines()[0][1] == os.getpid()
    finally:
        manager.close()
