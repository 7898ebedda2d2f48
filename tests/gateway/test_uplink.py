"""The uplink under a real ``gateway run``: real nginx, real Mosquitto, outages of both.

An MQTT node feeds readings (QoS 1, 20 a second) through the session broker;
the gateway publishes its log to a real nginx (WebDAV PUT) and announces each
checkpoint, retained, on a second Mosquitto. Both the web server and the
announcement broker are stopped for a while, then started again: ingest must
keep committing at the node's pace meanwhile, status must say the uplink is
failing and behind, and afterwards the mirror must catch up, be announced
again and verify with ``ledger-verify`` (every entry, once). A directory
target too, and the pure parts: the token bucket and the ``[uplink]`` keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import random
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

from gateway.anchoring.anchorer import Anchorer
from gateway.anchoring.local import LocalJournal
from gateway.backoff import Backoff
from gateway.config import parse_config
from gateway.config.uplink import AnnounceConfig, UplinkConfig
from gateway.drivers.mqtt.config import MqttConfig
from gateway.drivers.mqtt.source import tls_context
from gateway.errors import ConfigProblems
from gateway.health.metrics import render_metrics
from gateway.health.model import Facts, build_status
from gateway.health.text import render_text
from gateway.log import Log
from gateway.pipeline import Reading, Value
from gateway.store import Store
from gateway.uplink import Announcer, TokenBucket, Uplink
from ledger_client.cli import main as verify_main
from tests.gateway.daemon_procs import GATEWAY, records, start
from tests.gateway.test_mirror_verify import device_key
from tests.servers.broker import Broker, TlsBroker
from tests.servers.web_server import WebServer

T0 = 1_772_323_200_000_000_000  # 2026-03-01T00:00:00Z


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def station(tmp: Path, sensors: tuple[str, int], topic: str, uplink: str) -> Path:
    subprocess.run([*GATEWAY, "init", str(tmp)], check=True, capture_output=True)
    cfg = tmp / "gateway.toml"
    cfg.write_text(
        '[device]\nkey_file = "device.key"\ndata_dir = "data"\n'
        "[log]\ncheckpoint_every_entries = 1000\ncheckpoint_every_seconds = 0.5\n"
        f'[status]\nlisten = "127.0.0.1:{_free_port()}"\n'
        f'[mqtt]\nhost = "{sensors[0]}"\nport = {sensors[1]}\nclient_id = "{topic}-gw"\n'
        f'[[sensor]]\nid = "node-1"\ndriver = "mqtt"\ntopic = "{topic}"\ninterval_s = 1\n'
        f"{uplink}"
    )
    cfg.chmod(0o600)
    return cfg


async def feed(broker: tuple[str, int], topic: str, stop: asyncio.Event) -> None:
    """QoS 1 readings, 20 a second, until ``stop``."""
    async with aiomqtt.Client(broker[0], broker[1], identifier=f"{topic}-node") as client:
        seq = 0
        while not stop.is_set():
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            body = {"seq": seq, "time": now, "values": [{"q": "pH", "v": 7.0, "u": "[pH]"}]}
            await client.publish(topic, json.dumps(body), qos=1)
            seq += 1
            await asyncio.sleep(0.05)


async def until(
    what: str, check: Callable[[], Any], proc: subprocess.Popen[bytes], log: Path, s: float
) -> Any:
    deadline = time.monotonic() + s
    while True:
        found = check()
        if found:
            return found
        assert proc.poll() is None, f"the gateway exited:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{what}: not within {s} s\n{log.read_text()[-3000:]}"
        await asyncio.sleep(0.1)


def checkpoint_size(note: bytes | None) -> int:
    return int(note.decode().split("\n")[1]) if note else 0


def latest_note(db: Path) -> str:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
        (note,) = c.execute("SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
        rows = c.execute(
            "SELECT c.line FROM cosignatures c JOIN checkpoints k ON c.checkpoint = k.size "
            "WHERE k.size = (SELECT MAX(size) FROM checkpoints) ORDER BY c.witness"
        ).fetchall()
    return str(note) + "".join(str(r[0]) for r in rows)


def meta(db: Path, key: str) -> str | None:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
        row = c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def verify(source: str, trust: Path) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        rc = verify_main([source, "--trust", str(trust), "--json", "--jobs", "2"])
    return rc, json.loads(out.getvalue())


async def retained(broker: Broker, topic: str, timeout: float = 3.0) -> bytes | None:
    """The retained message of ``topic`` on ``broker`` (None: none within ``timeout``)."""
    try:
        async with aiomqtt.Client(broker.host, broker.port) as client:
            await client.subscribe(topic, qos=1)
            async with asyncio.timeout(timeout):
                async for message in client.messages:
                    # One published while subscribed comes live (retain unset): the next
                    # subscription gets it retained.
                    if message.retain:
                        assert isinstance(message.payload, bytes)
                        return message.payload
    except (TimeoutError, aiomqtt.MqttError):
        return None
    return None


def status_of(cfg: Path) -> dict[str, Any]:
    listen = cfg.read_text().split('listen = "')[1].split('"')[0]
    return dict(httpx.get(f"http://{listen}/status", timeout=5).json())


async def test_uplink_to_nginx_and_mosquitto_through_outages_of_both(
    tmp_path: Path,
    mosquitto: tuple[str, int],
    web_server: WebServer,
    announce_broker: Broker,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    topic = f"uplink-{uuid.uuid4().hex[:8]}"
    prefix = f"{web_server.url}/mirror/box-1"
    cfg = station(
        tmp_path / "gw",
        mosquitto,
        topic,
        f'[uplink]\nto = "{prefix}"\nretry_max_seconds = 1\n'
        f'[uplink.announce]\nhost = "{announce_broker.host}"\nport = {announce_broker.port}\n'
        "retry_max_seconds = 1\ntimeout_s = 2\n",
    )
    db, log = cfg.parent / "data" / "log.sqlite", cfg.parent / "gateway.log"
    device = (cfg.parent / "trust.txt").read_text().split("riverseal/")[1].split("+")[0]
    announce_topic = f"riverseal/{device}/checkpoint"
    stop = asyncio.Event()
    proc = start(cfg, procs)
    feeder = asyncio.create_task(feed(mosquitto, topic, stop))
    try:

        def mirrored() -> int:
            r = httpx.get(f"{prefix}/checkpoint")
            return checkpoint_size(r.content) if r.status_code == 200 else 0

        await until("a first checkpoint on the web server", lambda: mirrored() >= 20, proc, log, 30)
        note = await retained(announce_broker, announce_topic)
        assert note is not None and checkpoint_size(note) >= 20
        assert note.decode().startswith(f"riverseal/{device}\n")

        # Both down. Ingest goes on at the node's pace; the uplink falls behind and says so.
        web_server.stop()
        announce_broker.stop()
        down_at = time.monotonic()
        before = len(records(db))
        await asyncio.sleep(6)
        committed = len(records(db)) - before
        rate = committed / (time.monotonic() - down_at)
        assert rate >= 14, f"ingest fell to {rate:.1f} readings/s while the uplink was down"
        doc = await asyncio.to_thread(status_of, cfg)
        up = doc["uplink"]
        assert up["target"] == prefix and up["failures"] >= 1 and up["last_error"]
        assert up["lag_entries"] >= committed and up["lag_s"] >= 3
        assert up["announce"]["connected"] is False
        metrics = httpx.get(f"http://{doc['http']['listen']}/metrics").text
        lag = [ln for ln in metrics.splitlines() if ln.startswith("riverseal_uplink_lag_entries ")]
        assert lag and float(lag[0].split()[1]) >= committed

        # Back up: the mirror catches up, and the announcement is retained again (the
        # restarted broker kept nothing).
        web_server.start()
        announce_broker.start()
        target = len(records(db))
        await until("the mirror caught up", lambda: mirrored() >= target, proc, log, 30)
        again = None
        deadline = time.monotonic() + 20
        while again is None or checkpoint_size(again) < target:
            assert time.monotonic() < deadline, f"no new announcement:\n{log.read_text()[-2000:]}"
            again = await retained(announce_broker, announce_topic, timeout=1)
        doc = await asyncio.to_thread(status_of, cfg)
        assert doc["uplink"]["failures"] == 0 and doc["uplink"]["last_error"] is None
        assert doc["uplink"]["announce"]["connected"] is True
    finally:
        stop.set()
        await feeder
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 30) == 0, log.read_text()[-3000:]

    # The final checkpoint went up at shutdown; the mirror is the whole log, verified.
    served = httpx.get(f"{prefix}/checkpoint").content.decode()
    assert served == latest_note(db)
    assert await retained(announce_broker, announce_topic) == served.encode()  # announced too
    size = checkpoint_size(served.encode())
    assert size == len(records(db))
    assert meta(db, "published_size") == str(size)  # retention's input
    rc, report = await asyncio.to_thread(verify, prefix, cfg.parent / "trust.txt")
    assert rc == 3, report["failures"][:5]
    assert report["entries"] == size and report["failure_count"] == 0
    seqs = [r["src_seq"] for r in records(db) if r["kind"] == "reading"]
    assert len(seqs) == len(set(seqs)) and len(seqs) > 100


async def test_uplink_to_a_directory(
    tmp_path: Path, mosquitto: tuple[str, int], procs: list[subprocess.Popen[bytes]]
) -> None:
    topic = f"uplink-dir-{uuid.uuid4().hex[:8]}"
    mirror = tmp_path / "mirror"
    cfg = station(tmp_path / "gw", mosquitto, topic, '[uplink]\nto = "../mirror"\n')
    db, log = cfg.parent / "data" / "log.sqlite", cfg.parent / "gateway.log"
    stop = asyncio.Event()
    proc = start(cfg, procs)
    feeder = asyncio.create_task(feed(mosquitto, topic, stop))
    try:

        def on_disk() -> int:
            path = mirror / "checkpoint"
            return checkpoint_size(path.read_bytes()) if path.exists() else 0

        await until("100 entries in the directory", lambda: on_disk() >= 100, proc, log, 40)
    finally:
        stop.set()
        await feeder
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 30) == 0, log.read_text()[-3000:]
    assert (mirror / "checkpoint").read_text() == latest_note(db)
    assert not list(mirror.rglob("*.tmp")), "a temporary file was left behind"
    rc, report = await asyncio.to_thread(verify, str(mirror), cfg.parent / "trust.txt")
    assert rc == 3, report["failures"][:5]
    assert report["entries"] == len(records(db)) == on_disk()


def test_token_bucket_bounds_the_rate() -> None:
    bucket = TokenBucket(rate=1000, burst=1000, now=0.0)
    assert bucket.reserve(600, 0.0) == 0.0  # within the burst
    assert bucket.reserve(600, 0.0) == pytest.approx(0.2)  # 200 short: 0.2 s at 1000/s
    assert bucket.reserve(100, 0.2) == pytest.approx(0.1)  # still in debt
    assert bucket.reserve(5000, 10.0) == pytest.approx(4.0)  # refilled to the burst only
    # Whatever the sizes, n bytes take at least (n - burst) / rate seconds.
    b = TokenBucket(rate=500, burst=100, now=0.0)
    t = 0.0
    for _ in range(50):
        t += b.reserve(80, t)
    assert t >= (50 * 80 - 100) / 500


def test_uplink_config_keys(tmp_path: Path) -> None:
    key = tmp_path / "token"
    key.write_text("s3cret\n")
    key.chmod(0o600)
    base = '[device]\nkey_file = "k"\n'
    cfg = parse_config(
        base + '[uplink]\nto = "https://m.example/r/"\ntoken_file = "token"\n'
        'headers = { "X-Station" = "weir-3" }\nmax_bytes_per_s = 4096\n'
        '[uplink.announce]\nhost = "b.example"\ntls_ca = "/etc/ca.pem"\n',
        tmp_path / "gateway.toml",
    )
    up = cfg.uplink
    assert up is not None and up.to == "https://m.example/r" and up.token == "s3cret"
    assert dict(up.headers) == {"X-Station": "weir-3"} and up.max_bytes_per_s == 4096
    assert "s3cret" not in repr(up)
    assert up.announce is not None and up.announce.broker.port == 8883  # TLS's port
    assert up.announce.topic_for("rs-1") == "riverseal/rs-1/checkpoint"
    dir_cfg = parse_config(base + '[uplink]\nto = "mirror"\n', tmp_path / "gateway.toml")
    assert dir_cfg.uplink is not None and dir_cfg.uplink.to == str(tmp_path / "mirror")
    for bad, where in [
        ('to = "https://u:p@m.example/"', "uplink.to"),
        ('to = "mirror"\ntoken = "x"', "uplink.to"),
        ('to = "https://m.example"\nmax_bytes_per_s = 10', "uplink.max_bytes_per_s"),
        ('to = "https://m.example"\nheaders = { Authorization = "x" }', "uplink.headers"),
        ('to = "https://m.example"\n[uplink.announce]\nhost = "b"\ntopic = "a/+"', "topic"),
        ('to = "https://m.example"\nspeed = 3', "uplink.speed"),
    ]:
        with pytest.raises(ConfigProblems) as info:
            parse_config(base + "[uplink]\n" + bad + "\n", tmp_path / "gateway.toml")
        assert any(where in p.key for p in info.value.problems), (bad, info.value.problems)


async def test_a_backlog_drains_in_steps_at_its_pace_while_the_log_grows(tmp_path: Path) -> None:
    """A long outage's backlog (10,000 entries, a checkpoint every 500) goes up in steps
    ending at stored checkpoints, each raising retention's mark, while readings keep
    being committed on the same store and event loop."""
    key = device_key(77)
    mirror = tmp_path / "mirror"
    async with Store(tmp_path / "log.sqlite") as store:
        log = Log(store, key)
        await log.open()
        for start in range(0, 10_000, 500):
            batch = [
                Reading("ph-1", (Value("ph", 7.0 + i % 7 / 10, "pH"),), T0 + (start + i) * 10**9)
                for i in range(500)
            ]
            await log.append(batch, checkpoint=True)
        config = UplinkConfig(to=str(mirror), step_entries=2048, max_bytes_per_s=2**20)
        sizes: list[int] = []
        marks: list[str | None] = []
        committed = 0
        async with Uplink(log, config) as uplink:
            stop = asyncio.Event()

            async def ingest() -> None:
                nonlocal committed
                while not stop.is_set():
                    reading = Reading("ph-2", (Value("ph", 7.1, "pH"),), T0 + committed)
                    await log.append([reading])
                    committed += 1
                    await asyncio.sleep(0.005)

            writer = asyncio.create_task(ingest())
            began = time.monotonic()
            while not await uplink.step():
                sizes.append(checkpoint_size((mirror / "checkpoint").read_bytes()))
                marks.append(await store.get_meta("published_size"))
            took = time.monotonic() - began
            stop.set()
            await writer
            # The bound: no faster than max_bytes_per_s, past the first second's burst.
            rate = config.max_bytes_per_s
            assert uplink.bytes_total > 2 * rate and took >= (uplink.bytes_total - rate) / rate
        stored = {cp.size for cp in await store.checkpoints()}
    (tmp_path / "trust.txt").write_text(f"key {key.vkey}\n")
    assert len(sizes) >= 4, sizes  # 10,000 entries in steps of at most 2,048
    assert all(s in stored for s in sizes), "a step ended at a checkpoint the store lacks"
    assert all(b - a <= 2048 for a, b in zip([0, *sizes], sizes, strict=False))
    assert marks == [str(s) for s in sizes]  # retention's mark follows each step
    assert committed >= 2 * len(sizes), "the log did not grow while the backlog drained"
    final = (mirror / "checkpoint").read_bytes()
    assert checkpoint_size(final) == 10_000
    rc, report = await asyncio.to_thread(verify, str(mirror), tmp_path / "trust.txt")
    assert rc == 3 and report["entries"] == 10_000 and report["failure_count"] == 0, report[
        "failures"
    ][:3]


async def test_announcements_over_tls_and_a_broker_that_is_not_trusted(
    mosquitto_tls: TlsBroker,
) -> None:
    topic = f"riverseal/rs-tls{uuid.uuid4().hex[:6]}/checkpoint"
    good = MqttConfig(
        host=mosquitto_tls.host,
        port=mosquitto_tls.port,
        username=mosquitto_tls.username,
        password=mosquitto_tls.password,
        tls_ca=mosquitto_tls.ca,
    )
    rogue = dataclasses.replace(good, tls_ca=mosquitto_tls.rogue_ca)
    note = "riverseal/rs-tls\n42\nAAAA\n\n\u2014 riverseal/rs-tls sig\n".encode()
    for broker, trusted in [(rogue, False), (good, True)]:
        announcer = Announcer(
            AnnounceConfig(broker=broker, timeout_s=3, retry_max_seconds=0.5), identifier="t"
        )
        task = asyncio.create_task(announcer.run())
        announcer.announce(topic, note)
        try:
            async with asyncio.timeout(10):
                if trusted:
                    await announcer.drained.wait()
                else:
                    while announcer.failures < 2:
                        await asyncio.sleep(0.05)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert announcer.announced == (1 if trusted else 0)
        if not trusted:
            assert announcer.last_error and "certificate" in announcer.last_error.lower()
    async with aiomqtt.Client(
        mosquitto_tls.host,
        mosquitto_tls.port,
        username=mosquitto_tls.username,
        password=mosquitto_tls.password,
        tls_context=tls_context(MqttConfig(tls_ca=mosquitto_tls.ca)),
    ) as client:
        await client.subscribe(topic, qos=1)
        async with asyncio.timeout(5):
            message = await anext(aiter(client.messages))
    assert message.retain and message.payload == note and message.qos == 1


def test_status_text_and_metrics_of_the_uplink() -> None:
    now = T0 + 100 * 10**9
    uplink: dict[str, Any] = {
        "target": "https://m.example/rs-1",
        "published": 1_000,
        "published_ns": now - 60 * 10**9,
        "pending_since_ns": now - 42 * 10**9,
        "backlog_bytes": 123_000,
        "bytes": 9_000,
        "files": 12,
        "last_error": "GET https://m.example/rs-1/checkpoint failed 2 times",
        "last_error_ns": now - 5 * 10**9,
        "failures": 3,
        "announce": {"broker": "mqtts://b:8883", "connected": False, "announced": 7},
    }
    facts = Facts(
        now_ns=now,
        pid=1,
        started_ns=T0,
        version="t",
        device="rs-1",
        data_dir="/d",
        log_size=1_500,
        checkpoint=(1_400, now - 10**9),
        anchored_final=None,
        first_unanchored_ns=None,
        sensors=(),
        sources={},
        ingest={},
        anchors={},
        disk_used_bytes=None,
        disk_limit_bytes=None,
        disk_quota_bytes=None,
        disk_state=None,
        clock="synced",
        uplink=uplink,
    )
    doc = build_status(facts)
    up = doc["uplink"]
    assert (up["published"], up["lag_entries"], up["lag_s"]) == (1_000, 500, 42.0)
    assert up["last_error"]["age_s"] == 5.0 and up["announce"]["connected"] is False
    text = render_text(doc)
    assert "uplink:      https://m.example/rs-1: published 1000, 500 entries behind (42 s)" in text
    assert "announce:    mqtts://b:8883: not connected, 7 announced" in text
    metrics = render_metrics(doc)
    for line in (
        "riverseal_uplink_published_size 1000",
        "riverseal_uplink_lag_entries 500",
        "riverseal_uplink_lag_seconds 42",
        "riverseal_uplink_backlog_bytes 123000",
        "riverseal_uplink_failures 3",
        "riverseal_uplink_announce_connected 0",
        "riverseal_uplink_announced_total 7",
    ):
        assert line in metrics.splitlines(), line
    caught_up = build_status(
        dataclasses.replace(facts, uplink={**uplink, "pending_since_ns": None})
    )
    assert caught_up["uplink"]["lag_s"] == 0.0
    assert build_status(dataclasses.replace(facts, uplink=None))["uplink"] is None
    assert "riverseal_uplink" not in render_metrics(
        build_status(dataclasses.replace(facts, uplink=None))
    )


def test_gateway_check_probes_the_uplink_and_its_broker(
    tmp_path: Path, mosquitto: tuple[str, int], web_server: WebServer, announce_broker: Broker
) -> None:
    cfg = station(
        tmp_path / "gw",
        mosquitto,
        "check-uplink",
        f'[uplink]\nto = "{web_server.url}/m/box"\n'
        f'[uplink.announce]\nhost = "{announce_broker.host}"\nport = {announce_broker.port}\n',
    )
    httpx.put(f"{web_server.url}/m/box/checkpoint", content=b"riverseal/rs-x\n12\nAAAA\n")

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*GATEWAY, "check", "--config", str(cfg), "--probe"],
            capture_output=True,
            text=True,
            timeout=60,
        )

    ok = check()
    assert "OK     uplink " in ok.stdout and "holds checkpoint 12 of riverseal/rs-x" in ok.stdout
    assert "OK     uplink.announce " in ok.stdout, ok.stdout
    web_server.stop()
    announce_broker.stop()
    down = check()
    assert down.returncode != 0
    assert "FAILED uplink " in down.stdout and "FAILED uplink.announce " in down.stdout


def test_gateway_check_names_a_missing_announce_ca(tmp_path: Path) -> None:
    subprocess.run([*GATEWAY, "init", str(tmp_path)], check=True, capture_output=True)
    cfg = tmp_path / "gateway.toml"
    with cfg.open("a") as f:
        f.write(
            f'[uplink]\nto = "{tmp_path / "mirror"}"\n'
            f'[uplink.announce]\nhost = "b.example"\ntls_ca = "{tmp_path / "no-ca.pem"}"\n'
        )
    run = subprocess.run(
        [*GATEWAY, "check", "--config", str(cfg)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2, run.stdout + run.stderr
    assert "uplink.announce.tls_ca" in run.stdout + run.stderr
    assert str(tmp_path / "no-ca.pem") in run.stdout + run.stderr


class _Longest(random.Random):
    """Every back-off delay at its bound, so the waits are known (not a jitter draw)."""

    def uniform(self, a: float, b: float) -> float:
        return b


async def test_a_new_checkpoint_cuts_the_retry_wait_short(
    tmp_path: Path, web_server: WebServer
) -> None:
    """The endpoint down: each try fails and the back-off grows (60 s, then 120 s), a
    new checkpoint waking each wait early; the endpoint back: the next checkpoint is
    published at once, while the 120 s wait it would otherwise sit out still runs."""
    to = f"{web_server.url}/wake-{uuid.uuid4().hex[:6]}"
    config = UplinkConfig(to=to, retry_max_seconds=3600)
    backoff = Backoff(60.0, config.retry_max_seconds, rng=_Longest())
    loop = asyncio.get_running_loop()

    async def wait_for(what: str, check: Callable[[], bool]) -> None:
        deadline = loop.time() + 30  # well inside the 60 s first wait
        while not check():
            assert loop.time() < deadline, f"{what}: not within 30 s"
            await asyncio.sleep(0.05)

    async with Store(tmp_path / "log.sqlite") as store:
        log = Log(store, device_key(78))
        await log.open()

        async def sign(size: int) -> None:
            """Readings up to ``size`` entries and a checkpoint, told to the uplink."""
            n = size - log.size
            t = T0 + log.size * 10**9
            batch = [Reading("ph-1", (Value("ph", 7.0, "pH"),), t + i * 10**9) for i in range(n)]
            await log.append(batch, checkpoint=True)
            cp = log.last_checkpoint
            assert cp is not None and cp.size == size
            uplink.notify(cp)

        async with Uplink(log, config, backoff=backoff, poll_s=3600) as uplink:
            runner = asyncio.create_task(uplink.run())
            try:
                await sign(10)
                await wait_for("checkpoint 10 published", lambda: uplink.published == 10)
                await asyncio.to_thread(web_server.stop)
                await sign(20)
                await wait_for("a first failure", lambda: uplink.retry_until is not None)
                assert (uplink.failures, backoff.attempt, uplink.woken) == (1, 1, 0)
                await sign(30)  # still down: woken, it fails again and waits longer
                await wait_for("a second failure", lambda: uplink.failures == 2)
                await wait_for("the second wait", lambda: uplink.retry_until is not None)
                assert (backoff.attempt, uplink.woken) == (2, 1)
                ends = uplink.retry_until
                assert ends is not None and ends - loop.time() > 100  # the 120 s wait
                await asyncio.to_thread(web_server.start)
                await sign(40)
                await wait_for("checkpoint 40 published", lambda: uplink.published == 40)
                assert loop.time() < ends, "published only after the back-off ran out"
                assert (uplink.woken, uplink.failures, uplink.last_error) == (2, 0, None)
                assert backoff.attempt == 0  # a success resets the back-off
            finally:
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await runner
    note = httpx.get(f"{to}/checkpoint", timeout=5).text
    assert checkpoint_size(note.encode()) == 40


async def test_an_anchor_final_after_the_checkpoint_is_published_without_a_new_one(
    tmp_path: Path,
) -> None:
    mirror = tmp_path / "mirror"
    async with Store(tmp_path / "log.sqlite") as store:
        log = Log(store, device_key())
        await log.open()
        await log.append(
            [Reading("ph-1", (Value("ph", 7.0, "pH"),), time.time_ns())], checkpoint=True
        )
        async with Uplink(log, UplinkConfig(to=str(mirror)), poll_s=3600) as uplink:
            assert await uplink.step()  # the checkpoint and its manifest, no anchor yet
            manifest = mirror / "riverseal-bundle.json"
            assert json.loads(manifest.read_text())["anchors"] == []
            assert await uplink.step()  # nothing new: the manifest is not rewritten
            journal = LocalJournal(tmp_path / "journal.sqlite")
            try:
                await Anchorer(store, [journal]).step()
            finally:
                await journal.aclose()
            assert await uplink.step()  # caught up, but the anchor is new
            anchors = json.loads(manifest.read_text())["anchors"]
            assert [(a["checkpoint"], a["backend"], a["state"]) for a in anchors] == [
                (1, "local", "final")
            ]
