"""riverseal-monitor following a real ``gateway run`` through real nginx and Mosquitto.

One box (two MQTT sensor nodes, a checkpoint a second) publishes its log to
nginx and announces each checkpoint on Mosquitto; a ``riverseal-monitor run``
process follows it through a shared subscription and polling. The test checks:
readings verified within 2 checkpoint intervals of being sent; a sensor made
silent alerted within its allowance plus one interval (also POSTed to a webhook
that refuses the first try); a checkpoint signed by the box's key with another
root at the verified size, announced on the broker, alerted as a fork; the box
stopped raises box-silent once, not again after the monitor restarts, and the
monitor's series holds each of the box's readings exactly once; an entry bundle
forged on the web server is rejected and alerted by a fresh monitor.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest

from gateway.keys import load_device_key
from ledger_client.checkpoint import Checkpoint, sign_checkpoint
from ledger_client.note import split_note
from ledger_client.tiles import ENTRIES, TILE_WIDTH, decode_entry_bundle, encode_entry_bundle
from ledger_client.tiles import tile_path as tpath
from ledger_client.witness import WitnessSigner, cosignatures
from riverseal_monitor.config import load_config
from riverseal_monitor.monitor import Monitor
from riverseal_monitor.state_sqlite import SqliteState, read_alerts, read_status
from tests.gateway.daemon_procs import GATEWAY, records, start
from tests.monitor.fleet_monitor import MONITOR, killed_at_end
from tests.servers.web_server import WebServer

pytestmark = pytest.mark.slow  # one box and two monitors end to end: about 40 s

INTERVAL_S = 1.0  # the box's checkpoint_every_seconds
ALLOWANCE_S = 1.5  # interval_s 1 + half of it (an MQTT sensor's grace; docs/operations.md)


monitors = pytest.fixture(killed_at_end, name="monitors")  # riverseal-monitor runs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def station(
    tmp: Path,
    broker: tuple[str, int],
    topic: str,
    prefix: str,
    announce: tuple[str, int] | None = None,
) -> Path:
    """A box of two MQTT nodes on ``broker``, announcing on ``announce`` (default: the same)."""
    announce = announce or broker
    subprocess.run([*GATEWAY, "init", str(tmp)], check=True, capture_output=True)
    cfg = tmp / "gateway.toml"
    sensors = "".join(
        f'[[sensor]]\nid = "node-{n}"\ndriver = "mqtt"\ntopic = "{topic}-{n}"\ninterval_s = 1\n'
        for n in (1, 2)
    )
    cfg.write_text(
        '[device]\nkey_file = "device.key"\ndata_dir = "data"\n'
        f"[log]\ncheckpoint_every_entries = 100000\ncheckpoint_every_seconds = {INTERVAL_S}\n"
        f'[status]\nlisten = "127.0.0.1:{_free_port()}"\n'
        f'[mqtt]\nhost = "{broker[0]}"\nport = {broker[1]}\nclient_id = "{topic}-gw"\n'
        f"{sensors}"
        f'[uplink]\nto = "{prefix}"\nretry_max_seconds = 1\n'
        f'[uplink.announce]\nhost = "{announce[0]}"\nport = {announce[1]}\n'
        "retry_max_seconds = 1\ntimeout_s = 2\n"
    )
    cfg.chmod(0o600)
    return cfg


def monitor_config(
    path: Path,
    origin: str,
    trust: Path,
    prefix: str,
    broker: tuple[str, int] | None,
    hook: str,
    witness: str = "",
) -> Path:
    mqtt = ""
    if broker is not None:
        mqtt = f'[broker]\nhost = "{broker[0]}"\nport = {broker[1]}\ngroup = "regulator"\n'
        mqtt += "retry_max_seconds = 1\n"
    path.write_text(
        f'[monitor]\nstate = "monitor.sqlite"\nwebhook = "{hook}"\npoll_interval_s = 2\n'
        "fetch_timeout_s = 3\n"
        f"tick_s = 0.2\ncheckpoint_interval_s = {INTERVAL_S}\nbox_silent_intervals = 3\n"
        "qc_burst_count = 3\nqc_burst_window_s = 60\n"
        f"{witness}"
        f'{mqtt}[[box]]\norigin = "{origin}"\ntrust = "{trust}"\nurl = "{prefix}"\n'
    )
    return path


class Webhook:
    """A real HTTP endpoint taking POSTs; it answers 503 to the first, 200 after."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.refused = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hook"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            await self._answer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the monitor hung up: nothing more to take
        finally:
            self.writers.discard(writer)
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])  # type: ignore[index]
            body = await reader.readexactly(length)
            if self.refused == 0:
                self.refused += 1
                status = b"503 Service Unavailable"
            else:
                self.posts.append(json.loads(body))
                status = b"200 OK"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            # Python 3.11's Server closes only the listening socket: a kept-alive
            # connection would outlive the test's loop and warn when collected.
            writers = list(self.writers)
            for writer in writers:
                writer.close()
            for writer in writers:
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
            await self.server.wait_closed()


async def feed(
    broker: tuple[str, int], topic: str, stop: asyncio.Event, markers: asyncio.Queue[float]
) -> None:
    """A node: a reading every 0.2 s, or a marker value when one is queued."""
    async with aiomqtt.Client(broker[0], broker[1], identifier=f"{topic}-node") as client:
        seq = 0
        while not stop.is_set():
            value = 7.0 if markers.empty() else markers.get_nowait()
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            body = {"seq": seq, "time": now, "values": [{"q": "pH", "v": value, "u": "[pH]"}]}
            await client.publish(topic, json.dumps(body), qos=1)
            seq += 1
            await asyncio.sleep(0.2)


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


async def until(what: str, check: Callable[[], Any], s: float, *logs: Path) -> Any:
    deadline = time.monotonic() + s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p}:\n{p.read_text()[-2000:]}" for p in logs if p.exists())
            raise AssertionError(f"{what}: not within {s} s\n{tails}")
        await asyncio.sleep(0.05)


def query(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
        try:
            return list(c.execute(sql, args).fetchall())
        except sqlite3.OperationalError:
            return []  # the schema is not there yet


def run_monitor(cfg: Path, out: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    with out.open("ab") as o, (cfg.parent / "monitor.log").open("ab") as e:
        procs.append(
            subprocess.Popen([*MONITOR, "run", "--config", str(cfg), "-v"], stdout=o, stderr=e)
        )


async def test_monitor_follows_a_live_box(
    tmp_path: Path,
    mosquitto: tuple[str, int],
    web_server: WebServer,
    procs: list[subprocess.Popen[bytes]],
    monitors: list[subprocess.Popen[bytes]],
) -> None:
    topic = f"mon-{uuid.uuid4().hex[:8]}"
    prefix = f"{web_server.url}/mirror/box-1"
    cfg = station(tmp_path / "gw", mosquitto, topic, prefix)
    trust = cfg.parent / "trust.txt"
    key = load_device_key(cfg.parent / "device.key")
    origin, device = key.origin, key.device_id
    hook = Webhook()
    hook_url = await hook.start()
    mon_dir = tmp_path / "monitor"
    mon_dir.mkdir()
    witness = WitnessSigner.generate("witness.regulator.example/m1")
    fd = os.open(mon_dir / "witness.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as key_file:
        key_file.write(witness.to_skey())
    mcfg = monitor_config(
        mon_dir / "monitor.toml",
        origin,
        trust,
        prefix,
        mosquitto,
        hook_url,
        'witness_key = "witness.key"\n',
    )
    state, out, mlog = mon_dir / "monitor.sqlite", mon_dir / "alerts.jsonl", mon_dir / "monitor.log"
    glog, gdb = cfg.parent / "gateway.log", cfg.parent / "data" / "log.sqlite"
    run_monitor(mcfg, out, monitors)
    gw = start(cfg, procs)
    stops = {n: asyncio.Event() for n in (1, 2)}
    marks: dict[int, asyncio.Queue[float]] = {n: asyncio.Queue() for n in (1, 2)}
    feeders = [
        asyncio.create_task(feed(mosquitto, f"{topic}-{n}", stops[n], marks[n])) for n in (1, 2)
    ]
    try:
        readings_sql = "SELECT COUNT(*) FROM readings WHERE origin = ?"
        await until(
            "20 readings verified by the monitor",
            lambda: (query(state, readings_sql, origin) or [(0,)])[0][0] >= 20,
            30,
            mlog,
            glog,
        )

        # 1. A reading sent now is verified within 2 checkpoint intervals.
        latencies = []
        sql = "SELECT COUNT(*) FROM readings WHERE origin = ? AND vals LIKE ?"
        for k in range(3):
            value = round(6.25 + k / 100, 2)
            sent = time.monotonic()
            marks[1].put_nowait(value)
            await until(
                f"marker {value} verified",
                lambda v=value: query(state, sql, origin, f"%, {v}, %")[0][0] == 1,  # type: ignore[misc]
                10,
                mlog,
            )
            latencies.append(time.monotonic() - sent)
        assert max(latencies) <= 2 * INTERVAL_S, f"verified after {latencies} s"

        # 2. node-2 falls silent: alerted within its allowance plus one checkpoint interval.
        stops[2].set()
        await feeders[1]
        silenced = time.monotonic()

        def silent_alert() -> dict[str, Any] | None:
            return next(
                (a for a in lines(out) if a.get("kind") == "silent" and a["sensor"] == "node-2"),
                None,
            )

        alert = await until("a silent alert for node-2", silent_alert, 10, mlog)
        took = time.monotonic() - silenced
        assert took <= ALLOWANCE_S + INTERVAL_S + 0.5, f"silent alerted after {took:.2f} s"
        assert alert["origin"] == origin and alert["detail"]["allowance_s"] == ALLOWANCE_S
        await until(
            "the silent alert POSTed after a refused try",
            lambda: any(p["key"] == "silent:node-2" for p in hook.posts),
            10,
            mlog,
        )
        assert hook.refused == 1

        # 3. The box stops; the monitor verifies its final checkpoint.
        stops[1].set()
        await feeders[0]
        gw.send_signal(signal.SIGTERM)
        assert gw.wait(timeout=20) == 0, glog.read_text()[-3000:]
        final = httpx.get(f"{prefix}/checkpoint").text
        cp = Checkpoint.parse(split_note(final)[0])
        size_sql = "SELECT size FROM boxes WHERE origin = ?"
        await until(
            "the final checkpoint verified",
            lambda: query(state, size_sql, origin) == [(cp.size,)],
            15,
            mlog,
        )

        # The monitor, a witness too, cosigned what it verified.
        ((cosigned,),) = query(state, "SELECT cosigned FROM boxes WHERE origin = ?", origin)
        valid, problems = cosignatures(cosigned, [witness.key])
        assert len(valid) == 1 and problems == [] and cosigned.startswith(final)

        # 4. A checkpoint the box's key signed with another root at that size: a fork.
        forked = Checkpoint(origin, cp.size, bytes(32))
        async with aiomqtt.Client(*mosquitto, identifier=f"{topic}-attacker") as client:
            await client.publish(
                f"riverseal/{device}/checkpoint", sign_checkpoint(forked, key.signer), qos=1
            )
        fork = await until(
            "a fork alert", lambda: [a for a in lines(out) if a.get("kind") == "fork"], 10, mlog
        )
        assert fork[0]["size"] == cp.size and fork[0]["detail"]["root"] == "00" * 32
        await until(
            "box-silent", lambda: any(a.get("kind") == "box-silent" for a in lines(out)), 10, mlog
        )

        # 5. Restarted, the monitor resumes from its state: nothing raised twice, every
        # reading of the box once.
        monitors[0].send_signal(signal.SIGTERM)
        assert monitors[0].wait(timeout=10) == 0, mlog.read_text()[-3000:]
        out2 = mon_dir / "alerts-2.jsonl"
        run_monitor(mcfg, out2, monitors)
        await asyncio.sleep(3 * INTERVAL_S + 2)  # past box_silent_intervals, and a poll
        assert monitors[1].poll() is None, mlog.read_text()[-3000:]
        assert [a for a in lines(out2) if a.get("event") == "alert"] == []
        kinds = [a["kind"] for a in read_alerts(state)]
        assert kinds.count("box-silent") == 1 and kinds.count("fork") == 1, kinds
        box_readings = [r for r in records(gdb) if r["kind"] == "reading"]
        got = query(state, "SELECT idx FROM readings WHERE origin = ? ORDER BY idx", origin)
        assert [i for (i,) in got] == [r["index"] for r in box_readings]
        status = read_status(state)
        assert status[0]["verified_size"] == cp.size
        cli = [*MONITOR, "alerts", "--config", str(mcfg), "--json"]
        shown = subprocess.run(cli, capture_output=True, text=True, check=True).stdout
        assert [json.loads(x)["kind"] for x in shown.splitlines()] == kinds
        cli = [*MONITOR, "status", "--config", str(mcfg)]
        shown = subprocess.run(cli, capture_output=True, text=True, check=True).stdout
        assert shown.startswith(f"{origin}  verified {cp.size} entries, "), shown
        assert status[0]["sensors"]["node-2"]["readings"] == sum(
            r["sensor"] == "node-2" for r in box_readings
        )
    finally:
        for s in stops.values():
            s.set()
        for f in feeders:
            with contextlib.suppress(Exception):
                await f
        await hook.close()

    # 6. An entry bundle forged on the web server: a fresh monitor rejects and alerts it.
    t = (cp.size - 1) // TILE_WIDTH
    width = cp.size - t * TILE_WIDTH
    path = web_server.root / "mirror" / "box-1" / tpath(ENTRIES, t, width)
    entries = decode_entry_bundle(path.read_bytes(), width)
    genuine = b'"u":"[pH]","v":7}'  # a signed reading's value, in the record's canonical JSON
    victim = max(k for k, e in enumerate(entries) if genuine in e)
    entries[victim] = entries[victim].replace(genuine, b'"u":"[pH]","v":9}', 1)
    path.write_bytes(encode_entry_bundle(entries))
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    fcfg = load_config(
        monitor_config(fresh / "monitor.toml", origin, trust, prefix, None, hook_url)
    )
    buf = io.StringIO()
    async with SqliteState(fcfg.state) as st, Monitor(fcfg, st, out=buf) as mon:
        task = asyncio.create_task(mon.run())
        try:
            forged = await until(
                "a forged alert",
                lambda: [json.loads(x) for x in buf.getvalue().splitlines() if '"forged"' in x],
                15,
            )
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        index = t * TILE_WIDTH + victim
        assert forged[0]["entry"] == index, forged
        assert "signature" in forged[0]["message"] and "hash" in forged[0]["message"]
        assert mon.boxes[origin].follower.size == 0  # nothing past what failed
    assert os.path.exists(fcfg.state)
