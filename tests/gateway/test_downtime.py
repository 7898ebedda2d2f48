"""The log bounds the gateway's own downtime: a real ``gateway run`` process reading two MQTT
nodes through a real Mosquitto is killed with SIGKILL, restarted, stopped cleanly, restarted,
and restarted once more with one node removed from its configuration.

The exported records must show: a ``boot`` event per start declaring the watched sensors and
saying how the run before it ended (``unclean`` after the kill, ``clean`` after a ``stop``
event); ``gateway-down`` gaps from each sensor's last covered instant to the boot; a
``config`` event naming the removed node; and, over the whole log, the covered-instant rule
of docs/bundle-format.md §4.2.2, which a verifier checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt

from gateway.config import load_config
from gateway.daemon import BOOT_META, plan_boot, sensor_expectations
from gateway.export import export_bundle
from gateway.keys import create_device_key, load_device_key
from gateway.log import Log
from gateway.pipeline import Event, Reading, Value
from gateway.silence import expectation
from gateway.store import Store
from ledger_client.records import format_time, parse_entry, parse_time
from tests.gateway.daemon_procs import records, start

INTERVAL_S = 0.5
NODES = ("node-1", "node-2")
TOLERANCE_S = 1.0  # what the rule allows a reading beyond its allowance
END_SLACK_S = 60.0  # what the rule allows at the end of the log beyond allowance + repeat


def config_text(broker: tuple[str, int], nodes: tuple[str, ...]) -> str:
    sensors = "".join(
        f'[[sensor]]\nid = "{n}"\ndriver = "mqtt"\ntopic = "downtime/{n}"\n'
        f"interval_s = {INTERVAL_S}\n"
        for n in nodes
    )
    return (
        '[device]\nkey_file = "device.key"\ndata_dir = "data"\n'
        "[log]\ncheckpoint_every_entries = 50\ncheckpoint_every_seconds = 0.5\n"
        f'[mqtt]\nhost = "{broker[0]}"\nport = {broker[1]}\nclient_id = "downtime-gw"\n' + sensors
    )


async def readings_after_boot(db: Path, boots: int, each: int, within: float = 15.0) -> None:
    """Wait for ``boots`` boot events and ``each`` readings per watched node after the last."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        recs = records(db)
        starts = [i for i, r in enumerate(recs) if r.get("event") == "boot"]
        if len(starts) >= boots:
            after = recs[starts[-1] :]
            watched = after[0]["detail"]["sensors"]
            if all(
                sum(r["kind"] == "reading" and r["sensor"] == n for r in after) >= each
                for n in watched
            ):
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {each} readings per node after boot {boots} within {within} s")


@contextlib.asynccontextmanager
async def nodes_publishing(broker: tuple[str, int]) -> AsyncIterator[None]:
    """Both nodes publish every INTERVAL_S / 2, QoS 1, until the block ends."""

    async def publish(client: aiomqtt.Client) -> None:
        seq = 0
        while True:
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            for n in NODES:
                values = [{"q": "turbidity", "v": 3.0 + seq % 7, "u": "NTU"}]
                body = {"seq": seq, "time": now, "values": values}
                await client.publish(f"downtime/{n}", json.dumps(body), qos=1)
            seq += 1
            await asyncio.sleep(INTERVAL_S / 2)

    async with aiomqtt.Client(broker[0], broker[1], identifier="downtime-nodes") as client:
        task = asyncio.create_task(publish(client))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def ns(text: str) -> int:
    return int(parse_time(text).timestamp() * 1e6) * 1000


def covered_instant_problems(recs: list[dict[str, Any]]) -> list[str]:
    """The covered-instant rule (docs/bundle-format.md §4.2.2), applied record by record."""
    expect: dict[str, tuple[float, float]] = {}
    covered: dict[str, int] = {}
    problems: list[str] = []
    for r in recs:
        if r["kind"] == "event" and r["event"] in ("boot", "config"):
            declared = r["detail"]["sensors"]
            expect = {s: (e["allowance_s"], e["repeat_s"]) for s, e in declared.items()}
            for s in r["detail"].get("removed", []):
                expect.pop(s, None)
            continue
        sensor = r.get("sensor")
        if sensor not in expect:
            continue
        allowance = expect[sensor][0] * 1e9
        last = covered.get(sensor)
        if r["kind"] == "reading":
            t = ns(r["time"])
            if last is not None and t - last > allowance + TOLERANCE_S * 1e9:
                problems.append(
                    f"{r['index']}: {sensor} read {(t - last) / 1e9:.3f} s after {last}"
                )
            covered[sensor] = max(t, last or t)
        elif r["kind"] == "gap":
            start, end = ns(r["from"]), ns(r["to"])
            if last is not None and start > last + allowance:
                problems.append(
                    f"{r['index']}: {sensor} gap starts {(start - last) / 1e9:.3f} s late"
                )
            covered[sensor] = max(end, last or end)
    end_ns = ns(recs[-1]["time"])
    for sensor, (allowance_s, repeat_s) in expect.items():
        last = covered.get(sensor)
        if last is not None and end_ns - last > (allowance_s + repeat_s + END_SLACK_S) * 1e9:
            problems.append(f"end: {sensor} uncovered for {(end_ns - last) / 1e9:.3f} s")
    return problems


def last_covered_before(recs: list[dict[str, Any]], index: int, sensor: str) -> str:
    """The sensor's latest reading time or gap end among the records before ``index``."""
    instants = [
        r["time"] if r["kind"] == "reading" else r["to"]
        for r in recs[:index]
        if r.get("sensor") == sensor and r["kind"] in ("reading", "gap")
    ]
    return str(max(instants, key=ns))


async def test_kill_clean_stop_and_a_removed_sensor_leave_signed_bounds(
    tmp_path: Path, mosquitto: tuple[str, int], procs: list[subprocess.Popen[bytes]]
) -> None:
    create_device_key(tmp_path / "device.key")
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(config_text(mosquitto, NODES))
    db = tmp_path / "data" / "log.sqlite"
    async with nodes_publishing(mosquitto):
        proc = start(cfg, procs)
        await readings_after_boot(db, 1, 2)
        proc.send_signal(signal.SIGKILL)  # a crash: no stop event
        proc.wait()
        await asyncio.sleep(1.5)  # down for longer than a reading's allowance
        proc = start(cfg, procs)
        await readings_after_boot(db, 2, 2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        await asyncio.sleep(1.0)
        cfg.write_text(config_text(mosquitto, ("node-1",)))  # node-2 taken out
        proc = start(cfg, procs)
        await readings_after_boot(db, 3, 2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    assert "Traceback" not in (tmp_path / "gateway.log").read_text()

    config = load_config(cfg)
    key = load_device_key(config.key_file)
    async with Store(config.db_path) as store:
        log = Log(store, key)
        await log.open()
        bundle = await export_bundle(log)
    recs = [dict(parse_entry(e.entry).rec) for e in bundle.entries]
    boots = [r for r in recs if r["kind"] == "event" and r["event"] == "boot"]
    stops = [r for r in recs if r["kind"] == "event" and r["event"] == "stop"]
    configs = [r for r in recs if r["kind"] == "event" and r["event"] == "config"]
    assert len(boots) == 3
    assert [s["detail"] for s in stops] == [{"cause": "clean"}] * 2
    assert recs[-1]["event"] == "stop"  # the clean stop is the last entry; the checkpoint follows

    # Each boot declares the watched sensors with the tracker's expectation of them.
    e = expectation(INTERVAL_S)
    assert (e.allowance_ns, e.repeat_ns) == (750_000_000, 60_000_000_000)
    one = {"interval_s": INTERVAL_S, "allowance_s": 0.75, "repeat_s": 60}
    both = {"node-1": one, "node-2": one}
    assert [b["detail"]["sensors"] for b in boots] == [both, both, {"node-1": one}]
    assert set(sensor_expectations(config)) == {"node-1"}
    for b in boots:
        assert {"version", "config_sha256", "pid", "qc_tests"} <= b["detail"].keys()

    # previous: none on the first boot; the kill shows as unclean, the SIGTERM as clean.
    assert boots[0]["detail"]["previous"] is None
    for boot, how in ((boots[1], "unclean"), (boots[2], "clean")):
        prev = boot["detail"]["previous"]
        before = recs[boot["index"] - 1]
        assert prev == {"index": before["index"], "time": before["time"], "stop": how}
        assert (before.get("event") == "stop") == (how == "clean")

    # After each restart, a gateway-down gap per watched sensor from its last covered
    # instant to the boot, taking the sensor's next seq.
    for boot in boots[1:]:
        at = boot["index"]
        watched = sorted(boot["detail"]["sensors"])
        down = [r for r in recs if r["kind"] == "gap" and r["reason"] == "gateway-down"]
        mine = [g for g in down if at < g["index"] < at + 1 + len(watched) + 1]
        assert sorted(g["sensor"] for g in mine) == watched
        for g in mine:
            assert g["from"] == last_covered_before(recs, at, g["sensor"])
            assert g["to"] == boot["time"]
            assert ns(g["from"]) < ns(g["to"])
    down_gaps = [r for r in recs if r["kind"] == "gap" and r["reason"] == "gateway-down"]
    assert len(down_gaps) == 2 + 1  # both nodes after the kill; node-1 alone after the stop
    # The downtime after the kill is covered end to end: the node's last reading before the
    # kill up to the restart, at least the 1.5 s the gateway was down.
    for g in down_gaps[:2]:
        assert ns(g["to"]) - ns(g["from"]) >= 1.5e9

    for sensor in NODES:  # gaps share the readings' seq, without holes
        seqs = [r["seq"] for r in recs if r.get("sensor") == sensor]
        assert seqs == list(range(len(seqs)))

    # Removing node-2 is a signed config event, right after the boot and its gaps.
    assert len(configs) == 1
    change = configs[0]["detail"]
    assert change == {
        "added": [],
        "removed": ["node-2"],
        "changed": [],
        "sensors": {"node-1": one},
    }
    assert boots[2]["index"] < configs[0]["index"] <= boots[2]["index"] + 2

    assert covered_instant_problems(recs) == []
    # ...and the rule has teeth: without the gateway-down gaps, the downtime shows.
    without = [r for r in recs if r.get("reason") != "gateway-down"]
    assert len(covered_instant_problems(without)) >= 2

    # The regulator's verifier on this genuine log: nothing fails (step 8 f included), and
    # the report shows the downtime and the removed sensor.
    path = tmp_path / "bundle.json"
    path.write_text(bundle.dumps())
    trust = tmp_path / "trust.txt"
    trust.write_text(f"key {key.vkey}\n")
    out = subprocess.run(
        [sys.executable, "-m", "ledger_client", str(path), "--trust", str(trust)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 3, out.stdout[-3000:]  # trusted; only a local journal dates it
    text = out.stdout
    assert "silence not checked" not in text
    for sensor in NODES:
        assert f"  {sensor}: " in text
    assert text.count(": gateway-down (1 record)") == 3
    assert "boot after an unclean stop" in text
    assert "boot after a clean stop" in text
    assert "removed node-2" in text
    doc = json.loads(
        subprocess.run(
            [sys.executable, "-m", "ledger_client", str(path), "--trust", str(trust), "--json"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    )
    assert doc["failure_count"] == 0
    events = [e["event"] for e in doc["timeline"]]
    assert events.count("boot") == 3 and events.count("stop") == 2 and "config" in events


async def test_the_last_declaration_without_a_walk_after_a_lost_boot_and_in_an_old_log(
    tmp_path: Path,
) -> None:
    """``plan_boot`` finds the boot to compare with: by the pointer in meta, past a start that
    died before its boot was committed, and by looking back in a log older than the pointer."""
    create_device_key(tmp_path / "device.key")
    key = load_device_key(tmp_path / "device.key")
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(config_text(("127.0.0.1", 1883), NODES))
    config = load_config(cfg)
    t0 = time.time_ns() // 1000 * 1000 - 100 * 10**9  # records keep microseconds
    async with Store(config.db_path) as store:
        log = Log(store, key)
        await log.open()
        # A log written before boots declared sensors: an old boot, readings, no pointer.
        await log.append([Event("boot", t0, {"version": "0.0.9"})])
        await log.append([Reading(n, (Value("turbidity", 3.0, "NTU"),), t0 + 10**9) for n in NODES])
        plan = await plan_boot(store, config, t0 + 5 * 10**9)
        assert plan.last_boot == 0
        assert plan.previous == {
            "index": 2,
            "time": format_time(t0 + 10**9),
            "stop": "unclean",
        }
        assert plan.config is not None
        assert (plan.config["added"], plan.config["removed"]) == (list(NODES), [])
        assert [(g.sensor, g.from_ns, g.to_ns) for g in plan.gaps] == [
            (n, t0 + 10**9, t0 + 5 * 10**9) for n in NODES
        ]
        # This start's boot (declaring both nodes) is committed at index 3...
        await store.set_meta(BOOT_META, json.dumps({"index": 3, "before": plan.last_boot}))
        boot = {"sensors": plan.sensors, "previous": plan.previous}
        await log.append([Event("boot", t0 + 5 * 10**9, boot)])
        # ...the next start dies after setting the pointer, before its boot is committed...
        await store.set_meta(BOOT_META, json.dumps({"index": 4, "before": 3}))
        # ...so the one after compares with boot 3, and finds nothing changed.
        plan = await plan_boot(store, config, t0 + 9 * 10**9)
        assert plan.last_boot == 3
        assert plan.config is None
        assert plan.previous is not None and plan.previous["index"] == 3
        # Each node's covered instant is still its reading: 8 s of downtime to cover.
        assert [(g.from_ns, g.to_ns) for g in plan.gaps] == [(t0 + 10**9, t0 + 9 * 10**9)] * 2
