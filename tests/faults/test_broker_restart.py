"""Broker restart under a real ``gateway run`` while nodes keep publishing.

tests/gateway/test_mqtt_redelivery.py already restarts a persistent broker between two
bursts and shows the out-of-order redelivery verifies with no gap; this adds what happens
*during* the outage. Two nodes publish 100 readings/s each with QoS 1 through a broker
run for no loss (tests/servers/persistent_broker.py). The broker is stopped for three
seconds while the nodes keep trying (each keeps every seq PUBACKed and re-sends what
was not), then started again on the same port. The gateway's status names the cause
while the broker is away, the gateway reconnects by itself within its capped, jittered
back-off, every acknowledged reading is logged exactly once, no reading is declared
lost, and the regulator's verifier accepts the log. A second test kills a broker that
holds acknowledged messages it never saved: the gateway declares exactly those lost.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from tests.faults.publishers import Node, run_nodes
from tests.faults.verifying import export_and_verify
from tests.gateway.daemon_procs import GATEWAY, records, start, subscribed
from tests.servers.persistent_broker import NO_LOSS, PersistentBroker

OUTAGE_S = 3.0
RATE_EACH = 100.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_status(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as reply:
        doc: dict[str, Any] = json.loads(reply.read())
        return doc


async def wait_for(what: str, check: Any, within: float = 20.0) -> Any:
    deadline = time.monotonic() + within
    while not (got := await asyncio.to_thread(check)):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return got


async def test_a_broker_stopped_while_nodes_publish_loses_nothing_acknowledged(
    tmp_path: Path,
    persistent_broker: PersistentBroker,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    broker = persistent_broker
    status_port = _free_port()
    subprocess.run([*GATEWAY, "init", str(tmp_path)], check=True, capture_output=True)
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        '[device]\nkey_file = "device.key"\ndata_dir = "data"\n'
        "[log]\ncheckpoint_every_seconds = 0.5\ncommit_window_s = 0.02\n"
        f'[status]\nlisten = "127.0.0.1:{status_port}"\n[anchor.local]\nenabled = true\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nclient_id = "restart-gw"\n'
        + "".join(
            f'[[sensor]]\nid = "node-{i}"\ndriver = "mqtt"\ntopic = "restart/node-{i}"\n'
            "interval_s = 1\n"
            for i in range(2)
        )
    )
    db = tmp_path / "data" / "log.sqlite"
    daemon = start(cfg, procs)
    await subscribed(cfg, daemon)

    nodes = [Node(f"node-{i}", f"restart/node-{i}") for i in range(2)]
    stop_nodes = asyncio.Event()
    publishing = asyncio.create_task(
        run_nodes(nodes, broker.host, broker.port, RATE_EACH, stop_nodes)
    )

    def logged() -> int:
        return sum(r["kind"] == "reading" for r in records(db))

    await wait_for("readings", lambda: logged() >= 100)
    await asyncio.to_thread(broker.stop)  # SIGTERM: it saves its sessions and queues
    stopped = time.monotonic()

    def cause() -> set[str] | None:
        sensors = http_status(status_port)["sensors"]
        states = {sensors[f"node-{i}"]["state"] for i in range(2)}
        return states if states <= {"broker-lost", "broker-unreachable"} else None

    during = await wait_for("the status to name the broker", cause, within=OUTAGE_S + 5)
    await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
    acked_before = sum(len(n.acked) for n in nodes)
    await asyncio.to_thread(broker.start)
    restarted = time.monotonic()
    await subscribed(cfg, daemon, times=2, within_s=35)
    reconnect_s = time.monotonic() - restarted
    await wait_for(
        "the nodes to be acknowledged again",
        lambda: sum(len(n.acked) for n in nodes) > acked_before + 100,
    )
    await asyncio.sleep(1.0)
    stop_nodes.set()
    await publishing
    acked = {n.name: set(n.acked) for n in nodes}
    total = sum(len(a) for a in acked.values())
    assert total > acked_before + 100  # the nodes went on after the outage
    await wait_for("every acknowledged reading", lambda: logged() >= total, within=30)
    await asyncio.sleep(0.5)  # a late redelivery must still be recognised
    assert daemon.poll() is None  # it rode the outage out: no restart
    daemon.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(daemon.wait, 20) == 0

    recs = records(db)
    got = Counter((r["sensor"], r["src_seq"]) for r in recs if r["kind"] == "reading")
    assert max(got.values()) == 1  # nothing twice
    for name, seqs in acked.items():
        missing = sorted(s for s in seqs if (name, s) not in got)
        assert not missing, f"{name}: acknowledged, not logged: {missing[:10]}"
    lost = [r for r in recs if r["kind"] == "gap" and r["reason"] == "source sequence gap"]
    assert not lost, lost  # the broker kept everything: nothing declared lost
    boots = [r for r in recs if r["kind"] == "event" and r["event"] == "boot"]
    assert len(boots) == 1
    # Back-off: 0.5 s doubling to 30 s, jittered; three seconds down is at most a few
    # seconds' wait once the broker is back.
    assert reconnect_s < 10, reconnect_s
    print(f"status during the outage: {sorted(during)}; reconnected {reconnect_s:.1f} s after")

    returncode, report = export_and_verify(cfg, tmp_path / "trust.txt")
    assert report["failure_count"] == 0, report["failures"]
    assert returncode == 3


async def test_what_a_broker_loses_is_declared_lost_by_signed_gap_records(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """The other side of docs/operations.md's advice: a broker that dies holding
    acknowledged messages loses them, and the gateway says so. The broker delivers one
    message at a time (``max_inflight_messages 1``) and never saves while it runs; the
    gateway is frozen (SIGSTOP) so messages queue in the broker, the broker is killed
    (SIGKILL, a power cut) and started empty, the gateway thawed. The node goes on
    numbering; the gateway sees its ``seq`` jump and, once its reorder window (1 s) has
    passed, writes ``source sequence gap`` records: every acknowledged reading is logged
    or declared lost, and the verifier accepts the log."""
    workdir = tmp_path / "broker"
    workdir.mkdir()
    lossy = "max_inflight_messages 1\nautosave_interval 3600\n"
    broker = PersistentBroker(workdir, NO_LOSS + lossy)
    broker.start()
    try:
        await lossy_broker_run(tmp_path, broker, procs)
    finally:
        broker.stop()


async def lossy_broker_run(
    tmp_path: Path, broker: PersistentBroker, procs: list[subprocess.Popen[bytes]]
) -> None:
    subprocess.run([*GATEWAY, "init", str(tmp_path)], check=True, capture_output=True)
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        '[device]\nkey_file = "device.key"\ndata_dir = "data"\n'
        "[log]\ncheckpoint_every_seconds = 0.5\ncommit_window_s = 0.02\n"
        '[status]\nlisten = ""\n[anchor.local]\nenabled = true\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nclient_id = "lossy-gw"\n'
        "reorder_window_s = 1\n"
        '[[sensor]]\nid = "node-0"\ndriver = "mqtt"\ntopic = "lossy/node-0"\ninterval_s = 1\n'
    )
    db = tmp_path / "data" / "log.sqlite"
    daemon = start(cfg, procs)
    await subscribed(cfg, daemon)
    node = Node("node-0", "lossy/node-0")
    stop_node = asyncio.Event()
    publishing = asyncio.create_task(run_nodes([node], broker.host, broker.port, 50.0, stop_node))

    def readings() -> list[dict[str, Any]]:
        return [r for r in records(db) if r["kind"] == "reading"]

    def declared() -> list[dict[str, Any]]:
        return [r for r in records(db) if r.get("reason") == "source sequence gap"]

    await wait_for("readings", lambda: len(readings()) >= 50)
    daemon.send_signal(signal.SIGSTOP)  # frozen: what the node sends now waits in the broker
    try:
        acked_frozen = len(node.acked)
        await asyncio.sleep(1.5)
        assert len(node.acked) > acked_frozen + 40  # the broker acknowledged them
        await asyncio.to_thread(broker.kill)  # and dies holding them
        await asyncio.to_thread(broker.start)  # empty: no save, no session
    finally:
        daemon.send_signal(signal.SIGCONT)
    await subscribed(cfg, daemon, times=2, within_s=35)
    await wait_for("a gap record declaring the loss", declared, within=20)
    await asyncio.sleep(1.0)
    stop_node.set()
    await publishing
    await wait_for(
        "the node's last readings",
        lambda: max(node.acked) in {r["src_seq"] for r in readings()},
        within=20,
    )
    daemon.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(daemon.wait, 20) == 0

    got = Counter(r["src_seq"] for r in readings())
    assert max(got.values()) == 1
    lost = {s for g in declared() for s in range(g["src_seq_from"], g["src_seq_to"] + 1)}
    assert lost, "nothing declared lost"
    unaccounted = sorted(s for s in node.acked if s not in got and s not in lost)
    assert not unaccounted, f"acknowledged, neither logged nor declared lost: {unaccounted[:10]}"
    assert lost <= set(range(max(node.acked) + 1))  # only numbers the node did send
    print(f"declared lost by {len(declared())} gap record(s): {len(lost)} readings")

    returncode, report = export_and_verify(cfg, tmp_path / "trust.txt")
    assert report["failure_count"] == 0, report["failures"]
    assert returncode == 3
