"""The clock stepping backwards and forwards under a running Gateway, through its clock.

An in-process ``Gateway`` whose clock (gateway/clock.py ``GatewayClock``) reads a time
source the test steps, with a real MQTT source stamping readings off the same source and
a real Mosquitto: sensor ``a`` publishes ten readings a second, sensor ``b`` never does.
The wall clock steps back one hour, then forward two. Each step is a signed ``clock-step``
event logged ahead of the readings stamped after it; readings keep their order and their
receive times on the stepped clock; ``b`` gets its first gap one allowance after the boot
(the step comes within it), not an hour later; nothing acknowledged is lost; the
regulator's verifier accepts the log.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway.clock import ClockStep, GatewayClock, StepWatch
from gateway.config import MqttSensorConfig, load_config
from gateway.daemon import Gateway
from gateway.drivers.mqtt.source import MqttSource
from gateway.silence import SilenceTracker, expectation
from ledger_client.records import parse_time
from tests.faults.publishers import payload
from tests.faults.verifying import export_and_verify
from tests.gateway.daemon_procs import GATEWAY, records
from tests.ledger_client.test_completeness_time import (
    DECLARED,
    Box,
    at,
    failures,
    notes,
    steady,
)

HOUR_NS = 3600 * 1_000_000_000


class SteppedTime:
    """The system's clocks, with wall time moved by ``offset_ns`` (monotonic never is)."""

    def __init__(self) -> None:
        self.offset_ns = 0

    def time_ns(self) -> int:
        return time.time_ns() + self.offset_ns

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()


def ns(text: str) -> int:
    t = parse_time(text)
    return round(t.replace(microsecond=0).timestamp()) * 1_000_000_000 + t.microsecond * 1000


async def wait_for(what: str, check: Any, timeout: float) -> float:
    """Poll ``check()`` until true; how long it took."""
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < timeout, f"no {what} in {timeout} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


async def test_steps_back_and_forward_are_logged_and_silence_is_measured_in_elapsed_time(
    tmp_path: Path, mosquitto: tuple[str, int]
) -> None:
    subprocess.run([*GATEWAY, "init", str(tmp_path)], check=True, capture_output=True)
    cfg_path = tmp_path / "gateway.toml"
    cfg_path.write_text(
        '[device]\nkey_file = "device.key"\ndata_dir = "data"\n'
        "[log]\ncheckpoint_every_seconds = 0.5\n[anchor.local]\nenabled = true\n"
        '[status]\nlisten = ""\n'
        f'[mqtt]\nhost = "{mosquitto[0]}"\nport = {mosquitto[1]}\nclient_id = "clock-steps"\n'
        '[[sensor]]\nid = "a"\ndriver = "mqtt"\ntopic = "clock-steps/a"\ninterval_s = 0.5\n'
        '[[sensor]]\nid = "b"\ndriver = "mqtt"\ntopic = "clock-steps/b"\ninterval_s = 6\n'
    )
    cfg = load_config(cfg_path)
    db = cfg.db_path
    wall = SteppedTime()
    mqtt = [s for s in cfg.sensors if isinstance(s, MqttSensorConfig)]
    assert cfg.mqtt is not None
    source = MqttSource(cfg.mqtt, mqtt, device_id="clock-steps", clock=wall.time_ns)
    gw = Gateway(cfg, sources=[source], clock=GatewayClock(wall), status_every_s=0.2)
    stop, stop_node = asyncio.Event(), asyncio.Event()
    running = asyncio.create_task(gw.run(stop))
    acked: list[int] = []

    async def node() -> None:
        async with aiomqtt.Client(*mosquitto, identifier="clock-steps-a") as client:
            seq = 0
            while not stop_node.is_set():
                await client.publish("clock-steps/a", payload(seq), qos=1)
                acked.append(seq)
                seq += 1
                await asyncio.sleep(0.1)

    # Generous limits: on two cores shared with other suites a start can take seconds.
    await asyncio.wait_for(gw.started.wait(), 60)
    await wait_for("connection", lambda: gw.health.get("mqtt") is not None, 30)
    await asyncio.sleep(0.5)  # the persistent session subscribes
    publishing = asyncio.create_task(node())

    def readings_of(sensor: str) -> list[dict[str, Any]]:
        return [r for r in records(db) if r["kind"] == "reading" and r["sensor"] == sensor]

    await wait_for("reading of a", lambda: readings_of("a"), 30)

    def gap_of_b() -> bool:
        return any(r["kind"] == "gap" and r["sensor"] == "b" for r in records(db))

    assert not gap_of_b(), "b's allowance ran out before the step: the start took too long"
    wall.offset_ns -= HOUR_NS  # back one hour
    stepped_back = time.monotonic()

    await wait_for("gap of b", gap_of_b, 25)
    late_s = time.monotonic() - stepped_back
    await asyncio.sleep(0.5)
    wall.offset_ns += 2 * HOUR_NS  # forward two
    await asyncio.sleep(1.5)
    stop_node.set()
    await publishing
    await asyncio.sleep(0.3)  # the last PUBACKed reading is committed before its PUBACK
    stop.set()
    await asyncio.wait_for(running, 60)

    log = records(db)
    boot = log[0]
    assert boot["event"] == "boot"
    steps = [r for r in log if r["kind"] == "event" and r["event"] == "clock-step"]
    assert [round(s["detail"]["step_s"]) for s in steps] == [-3600, 7200]
    for s in steps:
        assert s["detail"]["to"] == s["time"]
        assert ns(s["detail"]["to"]) - ns(s["detail"]["from"]) == round(s["detail"]["step_s"] * 1e9)

    # b: silent since the boot; its first gap starts at the boot moved by the step and
    # comes one allowance (9 s) after it, not an hour later.
    b_gaps = [r for r in log if r["kind"] == "gap" and r["sensor"] == "b"]
    first = b_gaps[0]
    assert first["reason"] == "silent"
    step_back_ns = ns(steps[0]["detail"]["to"]) - ns(steps[0]["detail"]["from"])
    # (to the microsecond: the tracker moved by the step in ns, the record rounds both)
    assert abs(ns(first["from"]) - (ns(boot["time"]) + step_back_ns)) <= 1000
    # Due 9 s after the boot; a loaded machine may poll a few seconds late, not an hour.
    assert 9e9 < ns(first["to"]) - ns(first["from"]) < 25e9
    assert late_s < 20.0

    # a: every acknowledged reading once, in publishing order, each stamped on the clock
    # of its stretch: after the first step an hour behind, after the second an hour ahead.
    a = [(i, r) for i, r in enumerate(log) if r["kind"] == "reading" and r["sensor"] == "a"]
    assert sorted(r["src_seq"] for _, r in a) == acked
    assert [r["src_seq"] for _, r in a] == acked
    idx = [log.index(s) for s in steps]
    stretches = [
        [r for i, r in a if i < idx[0]],
        [r for i, r in a if idx[0] < i < idx[1]],
        [r for i, r in a if i > idx[1]],
    ]
    assert all(stretches), "readings in each stretch"
    for k, stretch in enumerate(stretches):
        times = [ns(r["time"]) for r in stretch]
        assert times == sorted(times)  # in order within a stretch
        # Each stretch's readings lie between the events that bound it.
        if k > 0:
            assert times[0] >= ns(steps[k - 1]["detail"]["to"]) - 1_000_000_000
        if k < 2:
            assert times[-1] <= ns(steps[k]["detail"]["from"]) + 1_000_000_000
    assert ns(stretches[1][0]["time"]) < ns(stretches[0][-1]["time"]) - HOUR_NS // 2
    assert ns(stretches[2][0]["time"]) > ns(stretches[1][-1]["time"]) + HOUR_NS

    # The regulator's verifier accepts the log: the steps are declared.
    returncode, report = export_and_verify(cfg_path, tmp_path / "trust.txt")
    assert report["failure_count"] == 0, report["failures"]
    assert returncode == 3
    assert [t["event"] for t in report["timeline"]] == ["boot", "clock-step", "clock-step", "stop"]
    assert any("2 clock-step event(s)" in n for n in report["notes"]), report["notes"]


# --- the pure parts: the step watch, the silence tracker, the verifier's 8 f ------------------

S = 1_000_000_000


def test_a_slew_is_no_step_and_a_step_either_way_is_one() -> None:
    watch = StepWatch(1000 * S, 5 * S)
    # NTP slewing at its 500 ppm limit for an hour stays far inside 2 s.
    assert watch.observe(1000 * S + 3600 * S + 1_800_000_000, 3605 * S) is None
    back = watch.observe(1000 * S + 3601 * S + 1_800_000_000 - 3600 * S, 3606 * S)
    assert back == ClockStep(1000 * S + 3601 * S + 1_800_000_000, 1001 * S + 1_800_000_000)
    assert back.step_ns == -3600 * S
    ahead = watch.observe(back.to_ns + 2 * S + 2 * S + 1, 3608 * S)  # 2 s elapsed, 2 s + 1 ns
    assert ahead is not None and ahead.step_ns == 2 * S + 1
    assert watch.observe(ahead.to_ns + 2 * S, 3610 * S) is None  # exactly 2 s more: no step


def test_the_gateway_clock_tells_its_listeners_before_it_returns_the_stepped_time() -> None:
    wall = SteppedTime()
    clock = GatewayClock(wall)
    seen: list[tuple[ClockStep, int]] = []
    clock.on_step.append(lambda step: seen.append((step, wall.time_ns())))
    clock.time_ns()
    assert seen == []
    wall.offset_ns = -HOUR_NS
    now = clock.time_ns()
    assert len(seen) == 1 and clock.last_step is seen[0][0]
    assert seen[0][0].to_ns == now and round(seen[0][0].step_ns / S) == -3600
    assert seen[0][0].detail()["step_s"] == pytest.approx(-3600, abs=0.01)


def test_a_sensor_silent_across_a_backward_step_gets_its_gap_one_allowance_late() -> None:
    e = expectation(10.0)  # allowance 15 s
    start = 1_800_000_000 * S
    for stepped in (False, True):
        tracker = SilenceTracker({"b": e}, start)
        now = start + 5 * S
        if stepped:
            tracker.clock_step(-3600 * S)
            now -= 3600 * S
        assert tracker.poll(now) == []
        gaps = tracker.poll(now + 11 * S)  # 16 s after the start, in elapsed time
        if stepped:
            assert [(g.from_ns, g.to_ns) for g in gaps] == [(start - 3600 * S, now + 11 * S)]
        else:
            assert [(g.from_ns, g.to_ns) for g in gaps] == [(start, now + 11 * S)]


def test_without_the_step_the_tracker_would_wait_the_length_of_the_step() -> None:
    e = expectation(10.0)
    start = 1_800_000_000 * S
    tracker = SilenceTracker({"b": e}, start)
    stepped_now = start - 3600 * S + 16 * S  # the clock went back; nobody told the tracker
    assert tracker.poll(stepped_now) == []  # this is the hour-late gap the step fixes


def declared_box(start: float = 0) -> Box:
    box = Box()
    box.boot(start, {"ph-1": DECLARED["ph-1"]})
    steady(box, start + 10, start + 90)
    return box


def test_the_verifier_takes_a_declared_forward_step_and_refuses_an_undeclared_one() -> None:
    for declared in (True, False):
        box = declared_box()
        if declared:
            box.event("clock-step", 7290, {"from": at(90.5), "to": at(7290), "step_s": 7199.5})
        steady(box, 7300, 7400)
        report = box.verify()
        if declared:
            assert failures(report) == []
            assert notes(report, "1 clock-step event(s)")
            assert [t.event for t in report.timeline] == ["boot", "clock-step"]
        else:
            assert len(failures(report)) == 1
            assert "silent from" in failures(report)[0]


def test_after_a_backward_step_a_silence_is_still_judged_in_elapsed_time() -> None:
    # Back an hour, then the sensor is silent 5 min with no gap record: a failure, found
    # although every time after the step is below the times before it. (The log starts
    # two hours in: the key's window opens at the box's first time.)
    t = 7200

    def stepped_box() -> Box:
        box = declared_box(t)
        box.event("clock-step", t + 95 - 3600, {"step_s": -3600})
        steady(box, t + 100 - 3600, t + 160 - 3600)
        return box

    box = stepped_box()
    late = box.reading("ph-1", t + 460 - 3600)
    assert failures(box.verify()) == [
        f"entry {late}: completeness: sensor ph-1: silent from {at(t + 160 - 3600)} to "
        f"{at(t + 460 - 3600)} (5 min 0 s) with no gap record"
    ]
    # And the same, its silence covered by the gap records the tracker writes: fine.
    box = stepped_box()
    box.gap("ph-1", t + 160 - 3600, t + 191 - 3600)
    box.gap("ph-1", t + 191 - 3600, t + 460 - 3600)
    box.reading("ph-1", t + 460 - 3600)
    assert failures(box.verify()) == []


def test_a_clock_step_without_a_number_moves_nothing() -> None:
    box = declared_box()
    box.event("clock-step", 7290, {"step_s": "a lot"})
    steady(box, 7300, 7400)
    assert len(failures(box.verify())) == 1
