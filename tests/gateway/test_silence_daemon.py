"""A real Gateway (temporary folder, real SQLite, local anchors) whose sensor goes silent
and comes back, and a source that crashes: signed gap records with the reason, QC
flags in the signed records, per-sensor status, and an exported bundle that verifies."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.config import EzoSensorConfig, GatewayConfig, LogConfig, StatusConfig
from gateway.daemon import Gateway
from gateway.export import export_bundle
from gateway.keys import create_device_key, load_device_key
from gateway.log import Log
from gateway.pipeline import Reading, Sink, Value
from gateway.silence import expectation
from gateway.store import Store
from ledger_client.bundle import Bundle
from ledger_client.records import parse_entry, parse_time
from ledger_client.verify import verify_bundle

INTERVAL_S = 0.2
SILENT_S = 1.2


class StutteringProbe:
    """Reports every INTERVAL_S, then only times out for SILENT_S, then reports again
    (one value out of range, one missing), then waits to be stopped."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.done = asyncio.Event()
        self.silent_from = self.silent_to = 0

    async def _read(self, sink: Sink, value: float, *, pause: bool = True) -> None:
        await sink.submit(Reading(self.name, (Value("temperature", value, "Cel"),), time.time_ns()))
        if pause:
            await asyncio.sleep(INTERVAL_S)

    async def run(self, sink: Sink) -> None:
        if self.done.is_set():
            await asyncio.Event().wait()
        for i in range(5):
            await self._read(sink, 12.0 + i / 100, pause=i < 4)
        # The first refusal comes at once, well inside the allowance even on a loaded
        # machine, so every gap of the silence can name it.
        self.silent_from = time.time_ns()
        for _ in range(round(SILENT_S / INTERVAL_S)):
            sink.reject(self.name, "timeout", "no reply within 0.1 s")
            await asyncio.sleep(INTERVAL_S)
        self.silent_to = time.time_ns()
        for value in (12.1, 80.0, math.nan, 12.2, 12.3):
            await self._read(sink, value)
        self.done.set()
        await asyncio.Event().wait()


class CrashOnce:
    """Crashes with a bug the first time it runs; then runs quietly."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.runs = 0

    async def run(self, sink: Sink) -> None:
        self.runs += 1
        if self.runs == 1:
            raise RuntimeError("driver bug: list index out of range")
        await asyncio.Event().wait()


def make_config(tmp_path: Path) -> GatewayConfig:
    sensors = (
        EzoSensorConfig(
            id="t-1", port="/dev/null", circuit="rtd", interval_s=INTERVAL_S, timeout_s=0.1
        ),
    )
    cfg = tmp_path / "gateway.toml"
    cfg.write_text("[device]\n")
    create_device_key(tmp_path / "device.key")
    return GatewayConfig(
        path=cfg,
        key_file=tmp_path / "device.key",
        data_dir=tmp_path / "data",
        # The probe waits for each commit before its next reading: a short gathering window
        # keeps its readings INTERVAL_S apart.
        log=LogConfig(commit_window_s=0.01),
        sensors=sensors,
        status=StatusConfig(listen=""),
    )


async def test_a_silent_sensor_gets_signed_gaps_and_the_bundle_verifies(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path)
    probe, crasher = StutteringProbe("t-1"), CrashOnce("x-9")
    gw = Gateway(config, sources=[probe, crasher], status_every_s=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop))
    seen_silence: dict[str, Any] | None = None
    async with asyncio.timeout(30):
        while not probe.done.is_set() or crasher.runs < 2:
            quiet = gw.status().get("sensors", {}).get("t-1", {}).get("silence")
            seen_silence = seen_silence or quiet
            await asyncio.sleep(0.02)
    stop.set()
    await task
    # While it was silent, status said since when and why; the crash was logged once.
    assert seen_silence is not None
    assert seen_silence["reason"] == "timeout"
    crashes = [r for r in caplog.records if "x-9" in r.getMessage() and "crash" in r.getMessage()]
    assert len(crashes) == 1
    assert crashes[0].exc_info is not None  # a first crash comes with its traceback

    key = load_device_key(config.key_file)
    async with Store(config.db_path) as store:
        log = Log(store, key)
        await log.open()
        bundle = await export_bundle(log)
    report = verify_bundle(
        Bundle.loads(bundle.dumps()), [key.signer.verifier()], now=datetime.now(UTC)
    )
    assert report.ok, [str(f) for f in report.failures]

    recs = [parse_entry(e.entry).rec for e in bundle.entries]
    boot = next(r for r in recs if r["kind"] == "event" and r["event"] == "boot")
    readings = [r for r in recs if r["kind"] == "reading" and r["sensor"] == "t-1"]
    gaps = [r for r in recs if r["kind"] == "gap" and r["sensor"] == "t-1"]
    assert len(readings) == 10  # every reading logged: out of range and missing ones too

    # The silence: gap records naming the refusal, spanning the silent phase.
    def ns(t: str) -> int:
        return int(parse_time(t).timestamp() * 1e6) * 1000

    timeouts = [g for g in gaps if g["reason"] == "timeout"]
    assert timeouts
    start, end = ns(timeouts[0]["from"]), ns(timeouts[-1]["to"])
    assert start <= probe.silent_from + 1000
    assert end >= probe.silent_to - 1000
    # The closing gap ends exactly at the first reading after the silence.
    assert timeouts[-1]["to"] in {r["time"] for r in readings}

    # Readings and gaps cover time from boot without overlap: between consecutive
    # anchors, a wait beyond the allowance is tiled by gaps end to end.
    allowance = expectation(INTERVAL_S, 0.1).allowance_ns
    anchors = [boot["time"], *(r["time"] for r in readings)]
    spans = sorted((g["from"], g["to"]) for g in gaps)
    for (_, a_to), (b_from, _) in itertools.pairwise(spans):
        assert a_to <= b_from
    for lo, hi in itertools.pairwise(anchors):
        inside = [s for s in spans if lo <= s[0] and s[1] <= hi]
        if ns(hi) - ns(lo) > allowance + 1000:
            assert inside and inside[0][0] == lo and inside[-1][1] == hi, (lo, hi, inside)
            assert all(a[1] == b[0] for a, b in itertools.pairwise(inside))

    # QC flags are signed with each value: an impossible temperature fails, NaN is missing.
    values = [r["values"][0] for r in readings]
    by_value = {v["v"]: v["qc"] for v in values}
    assert by_value[80.0]["flag"] == 4
    assert by_value[80.0]["tests"][0] == "4"  # gross range
    assert by_value[None] == {"flag": 9, "tests": "9999"}
    assert by_value[12.0]["tests"] == "1222"  # the first reading has no history
    assert boot["detail"]["qc_tests"] == "gross_range,spike,rate_of_change,flat_line"
    assert all(v["qc"]["flag"] in (1, 2, 3, 4, 9) for v in values)

    status: dict[str, Any] = json.loads((config.data_dir / "status.json").read_text())
    t1 = status["sensors"]["t-1"]
    assert t1["readings"] == 10
    assert t1["rejected"] == {"timeout": round(SILENT_S / INTERVAL_S)}
    assert t1["last_reading"] == readings[-1]["time"]
    assert t1["qc"]["fail"] == 1 and t1["qc"]["missing"] == 1
    assert sum(t1["qc"].values()) == 10
    x9 = status["sources"]["x-9"]
    assert x9["restarts"] == 1
    assert "driver bug" in x9["last_error"]
    assert x9["running"] is True
