"""Messages out of order: the MQTT source's reorder window, against real Mosquitto brokers.

A node's ``seq`` numbers skipped by a jump stay open for ``reorder_window_s``: one
that arrives late (a node or broker redelivering after a reconnect) is logged like
any other and needs no gap record; what is still missing when the window closes
is declared lost by one. The acceptance test runs a whole gateway, restarts a
broker that keeps its state on disk between messages 5 and 3, and has the
regulator's verifier accept the exported bundle.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import aiomqtt
import pytest

from gateway.config import MqttConfig, MqttSensorConfig
from gateway.drivers.mqtt.source import SEQUENCE_GAP, MqttSource
from gateway.pipeline import Gap
from gateway.store import decode_data
from ledger_client.records import parse_entry
from tests.gateway.daemon_procs import subscribed
from tests.servers.persistent_broker import MOSQUITTO, PersistentBroker

if TYPE_CHECKING:
    from tests.gateway.recording_sink import RecordingSink

GATEWAY = [sys.executable, "-m", "gateway"]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PersistentBroker]:
    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto is not installed: run scripts/setup --dev")
    workdir = tmp_path / "broker"
    workdir.mkdir()
    b = PersistentBroker(workdir)
    b.start()
    try:
        yield b
    finally:
        b.stop()


def payload(seq: int) -> bytes:
    """Node message ``seq``, stamped by the node's clock one second per message."""
    sent = datetime(2026, 11, 21, 5, tzinfo=UTC) + timedelta(seconds=seq)
    return json.dumps(
        {
            "seq": seq,
            "time": sent.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "values": [{"q": "turbidity", "v": 10.0 + seq, "u": "NTU"}],
        }
    ).encode()


async def publish(host: str, port: int, topic: str, seqs: list[int]) -> None:
    async with aiomqtt.Client(host, port) as pub:
        for seq in seqs:
            await pub.publish(topic, payload(seq), qos=1)


# --- the source alone, a real broker, a recording sink ----------------------------------------


@pytest.fixture
def window() -> float:
    """The source's reorder window; a test parametrizes it to change it."""
    return 0.4


@pytest.fixture
def node(request: pytest.FixtureRequest) -> tuple[str, str]:
    """A client id and a topic of this test's own on the session-wide broker."""
    name = "reorder-" + "".join(c if c.isalnum() else "-" for c in request.node.name)
    return name, f"{name}/node-1"


async def started(
    mosquitto: tuple[str, int], node: tuple[str, str], window: float, sink: RecordingSink
) -> asyncio.Task[None]:
    config = MqttConfig(
        host=mosquitto[0], port=mosquitto[1], client_id=node[0], reorder_window_s=window
    )
    src = MqttSource(config, [MqttSensorConfig(id="node-1", topic=node[1])], device_id="d")
    task = asyncio.create_task(src.run(sink))
    await sink.wait_for(lambda: src.connected, what="connected")
    return task


async def stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def logged_seqs(sink: RecordingSink) -> list[object]:
    """What was committed, in order: a reading's src_seq, a gap's (from, to)."""
    return [
        (e.src_seq_from, e.src_seq_to) if isinstance(e, Gap) else getattr(e, "src_seq", None)
        for e in sink.events
    ]


async def test_late_messages_fill_the_hole_and_no_gap_is_written(
    mosquitto: tuple[str, int], node: tuple[str, str], window: float, sink: RecordingSink
) -> None:
    task = await started(mosquitto, node, window, sink)
    await publish(*mosquitto, node[1], [1, 2, 5, 3, 4, 6])
    await sink.wait_for(lambda: len(sink.readings) == 6)
    await asyncio.sleep(2 * window)  # the window has closed: nothing was left to declare
    await stopped(task)
    assert logged_seqs(sink) == [1, 2, 5, 3, 4, 6]
    assert sink.gaps == []


async def test_what_is_still_missing_when_the_window_closes_is_declared_lost(
    mosquitto: tuple[str, int], node: tuple[str, str], window: float, sink: RecordingSink
) -> None:
    task = await started(mosquitto, node, window, sink)
    await publish(*mosquitto, node[1], [1, 2, 6, 4])  # 3 and 5 never come
    await sink.wait_for(lambda: len(sink.readings) == 4)
    assert sink.gaps == []  # within the window: still awaited
    await sink.wait_for(lambda: len(sink.gaps) == 2, what="the window to close")
    await stopped(task)
    by_seq = {r.src_seq: r.received_ns for r in sink.readings}
    # Each part of the hole left open, from the arrival of 2 to that of 6 (which showed it).
    assert sink.gaps == [
        Gap("node-1", SEQUENCE_GAP, by_seq[2], by_seq[6], src_seq_from=n, src_seq_to=n)
        for n in (3, 5)
    ]
    assert logged_seqs(sink) == [1, 2, 6, 4, (3, 3), (5, 5)]


@pytest.mark.parametrize("window", [3600.0])
async def test_holes_still_open_when_the_source_stops_are_declared(
    mosquitto: tuple[str, int], node: tuple[str, str], window: float, sink: RecordingSink
) -> None:
    task = await started(mosquitto, node, window, sink)
    await publish(*mosquitto, node[1], [7, 9])
    await sink.wait_for(lambda: len(sink.readings) == 2)
    await stopped(task)  # the gateway forgets its nodes' counts: it says what it lost
    assert logged_seqs(sink) == [7, 9, (8, 8)]


@pytest.mark.parametrize("window", [0.0])
async def test_no_window_declares_the_loss_before_the_reading_that_showed_it(
    mosquitto: tuple[str, int], node: tuple[str, str], window: float, sink: RecordingSink
) -> None:
    task = await started(mosquitto, node, window, sink)
    await publish(*mosquitto, node[1], [1, 4, 2])
    await sink.wait_for(lambda: len(sink.readings) == 3)
    await stopped(task)
    assert logged_seqs(sink) == [1, (2, 3), 4, 2]  # 2 came after its gap: logged all the same


@pytest.mark.parametrize("window", [3600.0])
async def test_a_hole_is_declared_once_the_node_is_far_past_it(
    mosquitto: tuple[str, int], node: tuple[str, str], window: float, sink: RecordingSink
) -> None:
    task = await started(mosquitto, node, window, sink)
    await publish(*mosquitto, node[1], [0, 2, 1001, 1002])
    await sink.wait_for(lambda: len(sink.readings) == 4)
    # 1 is 1,000 behind 1001: a verifier waits no longer for it (SRC_WINDOW), so neither
    # does the gateway; 3–1000 are still within reach of a late arrival.
    assert logged_seqs(sink) == [0, 2, (1, 1), 1001, 1002]
    await stopped(task)
    assert logged_seqs(sink) == [0, 2, (1, 1), 1001, 1002, (3, 1000)]


@pytest.mark.parametrize("window", [3600.0])
async def test_a_restarted_node_closes_the_holes_of_its_old_count(
    mosquitto: tuple[str, int], node: tuple[str, str], window: float, sink: RecordingSink
) -> None:
    task = await started(mosquitto, node, window, sink)
    await publish(*mosquitto, node[1], [10, 12])
    restarted = json.dumps(
        {"seq": 0, "time": "2026-11-21T06:00:00Z", "values": [{"q": "ph", "v": 7, "u": "pH"}]}
    ).encode()
    async with aiomqtt.Client(*mosquitto) as pub:
        await pub.publish(node[1], restarted, qos=1)
    await sink.wait_for(lambda: len(sink.readings) == 3)
    await stopped(task)
    assert logged_seqs(sink) == [10, 12, (11, 11), 0]


# --- acceptance: a whole gateway, a broker restarted between 5 and 3 -------------------------


def make_station(tmp_path: Path, broker: PersistentBroker) -> Path:
    subprocess.run([*GATEWAY, "init", str(tmp_path)], check=True, capture_output=True)
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        '[device]\nkey_file = "device.key"\ndata_dir = "data"\n'
        "[log]\ncheckpoint_every_entries = 50\ncheckpoint_every_seconds = 0.5\n"
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nclient_id = "redelivery"\n'
        '[[sensor]]\nid = "node-1"\ndriver = "mqtt"\ntopic = "redelivery/node-1"\n'
    )
    return cfg


def logged(db: Path) -> list[tuple[str, int | None]]:
    """(kind, src_seq) of every reading and gap committed so far, in log order."""
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        rows = c.execute("SELECT data FROM entries ORDER BY idx").fetchall()
    out = []
    for (data,) in rows:
        rec = parse_entry(decode_data(data)).rec
        if rec["kind"] != "event":
            out.append((str(rec["kind"]), rec.get("src_seq")))
    return out


async def wait_for_readings(db: Path, n: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while sum(kind == "reading" for kind, _ in logged(db)) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"only {logged(db)} committed in {timeout} s")
        await asyncio.sleep(0.05)


async def test_redelivered_after_a_broker_restart_the_bundle_verifies_with_no_gap(
    tmp_path: Path, broker: PersistentBroker
) -> None:
    cfg = make_station(tmp_path, broker)
    db = tmp_path / "data" / "log.sqlite"
    topic = "redelivery/node-1"
    with (tmp_path / "gateway.log").open("ab") as out:
        proc = subprocess.Popen([*GATEWAY, "run", "--config", str(cfg)], stdout=out, stderr=out)
    try:
        # The gateway's persistent session exists once it has subscribed.
        await subscribed(cfg, proc)
        await publish(broker.host, broker.port, topic, [1, 2, 5])
        await wait_for_readings(db, 3)
        broker.restart()  # the session and its subscription come back from disk
        await publish(broker.host, broker.port, topic, [3, 4, 6])
        await wait_for_readings(db, 6)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log_text = (tmp_path / "gateway.log").read_text()
    assert log_text.count("mqtt: connected") >= 2, log_text  # it did reconnect
    assert logged(db) == [("reading", n) for n in (1, 2, 5, 3, 4, 6)]  # and not a gap

    bundle = tmp_path / "bundle.json"
    subprocess.run(
        [*GATEWAY, "export", "--config", str(cfg), "--out", str(bundle)],
        check=True,
        capture_output=True,
    )
    verify = subprocess.run(
        [
            sys.executable,
            "-m",
            "ledger_client",
            str(bundle),
            "--trust",
            str(tmp_path / "trust.txt"),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    report = json.loads(verify.stdout)
    assert report["failure_count"] == 0, report["failures"]
    assert report["level"] == "authentic-undated"  # local anchors only: exit 3
    assert verify.returncode == 3
    node = report["sensors"]["node-1"]
    assert (node["readings"], node["gaps"], node["late"]) == (6, 0, 2)
    assert [t["event"] for t in report["timeline"]] == ["boot", "stop"]
    assert not any("silence" in note for note in report["notes"]), report["notes"]  # declared
