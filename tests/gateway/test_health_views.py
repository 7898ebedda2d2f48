"""The status document and its views, part by part: the pure model (states, QC names,
the oldest unanchored entry, ages from an explicit clock), the Prometheus exposition read
back by prometheus_client's parser, the text, the HTTP server on a real socket (routes,
limits, a bind failure), and the MQTT source telling a real broker's absence and loss."""

from __future__ import annotations

import asyncio
import json
import math
import socket
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.backoff import Backoff
from gateway.config import (
    EzoSensorConfig,
    GatewayConfig,
    MqttConfig,
    MqttSensorConfig,
    StatusConfig,
)
from gateway.daemon import Gateway
from gateway.drivers.ezo.source import EzoSource
from gateway.drivers.mqtt.source import MqttSource
from gateway.drivers.sdi12.config import Sdi12SensorConfig
from gateway.drivers.sdi12.source import Sdi12Source
from gateway.health.http import StatusServer
from gateway.health.metrics import render_metrics
from gateway.health.model import Facts, SensorFacts, build_status, sensor_state
from gateway.health.text import render_text
from gateway.keys import create_device_key
from gateway.pipeline import Value
from gateway.silence import Silence
from tests.gateway.recording_sink import RecordingSink
from tests.servers.broker import Broker

S = 1_000_000_000
NOW = 1_780_000_000 * S


def facts(sensors: list[SensorFacts], **changes: Any) -> Facts:
    base: dict[str, Any] = {
        "now_ns": NOW,
        "pid": 4242,
        "started_ns": NOW - 3700 * S,
        "version": "0.1.0",
        "device": "rs-test",
        "data_dir": "/var/lib/riverseal",
        "log_size": 120,
        "checkpoint": (100, NOW - 30 * S),
        "anchored_final": 90,
        "first_unanchored_ns": NOW - 95 * S,
        "sensors": sensors,
        "sources": {"ph-1": {"running": True, "restarts": 0, "last_error": None}},
        "ingest": {"committed": 120, "failed_batches": 0},
        "anchors": {"local": {"last_final": 90, "pending": [100], "failures": 2}},
        "disk_used_bytes": 5 * 2**20,
        "disk_limit_bytes": 20 * 2**20,
        "disk_quota_bytes": 20 * 2**20,
        "disk_state": "ok",
        "clock": "synced",
    }
    return Facts(**{**base, **changes})


PH = SensorFacts(
    "ph-1",
    readings=7,
    last_reading_ns=NOW - 12 * S,
    values=(Value("ph", 7.25, "pH"),),
    rejected={"link-lost": 1, "timeout": 2},
    last_reject=("link-lost", "/dev/ttyUSB0: end of file (unplugged?)", NOW - 10 * S),
    silence=Silence(NOW - 12 * S, "link-lost"),
    qc={"1": 6, "3": 1},
)


def test_a_sensor_state_is_its_silence_reason_or_a_link_reported_since_its_last_reading() -> None:
    assert sensor_state(PH) == "link-lost"
    # Before the allowance runs out: the link reason told after the last reading.
    down = SensorFacts("a", last_reading_ns=NOW - 2 * S, last_reject=("broker-refused", "", NOW))
    assert sensor_state(down) == "broker-refused"
    # A refusal of input is no link state; nor is a link reason a reading came after.
    assert sensor_state(SensorFacts("b", last_reading_ns=NOW, last_reject=("crc", "", NOW))) == "ok"
    back = SensorFacts("c", last_reading_ns=NOW, last_reject=("link-lost", "", NOW - S))
    assert sensor_state(back) == "ok"
    assert sensor_state(SensorFacts("d")) == "waiting"
    assert sensor_state(SensorFacts("e", silence=Silence(NOW - S, "silent"))) == "silent"


def test_the_document_has_ages_from_its_clock_names_for_qc_flags_and_the_unanchored_tail() -> None:
    doc = build_status(facts([PH, SensorFacts("node-1")]))
    ph = doc["sensors"]["ph-1"]
    assert ph["state"] == "link-lost"
    assert ph["age_s"] == 12.0
    assert ph["values"] == [{"quantity": "ph", "value": 7.25, "unit": "pH"}]
    assert ph["errors"] == 3
    assert ph["last_error"]["reason"] == "link-lost" and ph["last_error"]["age_s"] == 10.0
    assert ph["qc"] == {"pass": 6, "suspect": 1}
    assert ph["silence"]["age_s"] == 12.0
    assert doc["sensors"]["node-1"]["state"] == "waiting"
    assert doc["unanchored"] == {
        "index": 90,
        "entries": 30,
        "time": doc["unanchored"]["time"],
        "age_s": 95.0,
    }
    assert doc["checkpoint"]["age_s"] == 30.0 and doc["uptime_s"] == 3700.0
    assert doc["disk"]["used_fraction"] == 0.25
    assert doc["rejected"] == {"ph-1/link-lost": 1, "ph-1/timeout": 2}
    assert json.loads(json.dumps(doc)) == doc
    # Everything anchored final: no unanchored tail; no ledger at all: none to speak of.
    assert build_status(facts([], anchored_final=120))["unanchored"] is None
    assert build_status(facts([], anchors={}))["unanchored"] is None


def test_metrics_parse_back_to_the_document_figures_whatever_the_names() -> None:
    odd = 'tank "A"\\1\nx'
    other = SensorFacts(
        odd, readings=3, last_reading_ns=NOW - 1 * S, values=(Value("t", 8.5, "Cel"),)
    )
    doc = build_status(facts([PH, other]))
    samples = {}
    for family in text_string_to_metric_families(render_metrics(doc)):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    assert samples[("riverseal_sensor_readings_total", (("sensor", odd),))] == 3
    assert (
        samples[("riverseal_sensor_value", (("quantity", "t"), ("sensor", odd), ("unit", "Cel")))]
        == 8.5
    )
    assert samples[("riverseal_sensor_errors_total", (("sensor", "ph-1"),))] == 3
    assert samples[("riverseal_sensor_state", (("sensor", "ph-1"), ("state", "link-lost")))] == 1
    assert samples[("riverseal_sensor_state", (("sensor", "ph-1"), ("state", "ok")))] == 0
    assert (
        samples[("riverseal_sensor_qc_values_total", (("flag", "suspect"), ("sensor", "ph-1")))]
        == 1
    )
    assert samples[("riverseal_unanchored_entries", ())] == 30
    assert samples[("riverseal_oldest_unanchored_age_seconds", ())] == 95
    assert samples[("riverseal_anchor_failures", (("ledger", "local"),))] == 2
    assert samples[("riverseal_disk_quota_bytes", ())] == 20 * 2**20
    assert samples[("riverseal_clock_synced", (("state", "synced"),))] == 1
    assert samples[("riverseal_log_entries", ())] == 120
    assert all(not math.isnan(v) for v in samples.values())


def test_text_status_shows_values_ages_causes_and_names() -> None:
    text = render_text(build_status(facts([PH])))
    assert "sensor:      ph-1: link-lost" in text
    assert "  last:      7.25 pH at " in text and "(12 s ago)" in text
    assert "  counts:    7 readings, 3 errors" in text
    assert "  last error: link-lost at " in text and "end of file (unplugged?)" in text
    assert "  qc:        pass 6, suspect 1" in text
    assert "unanchored:  30 entries from entry 90 (recorded " in text
    assert ", 1 min 35 s ago) not yet anchored final" in text
    assert "up 1 h 1 min" in text
    assert "{" not in text


async def request(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    reply = await reader.read()
    writer.close()
    return reply


async def test_the_server_answers_get_only_within_its_limits() -> None:
    doc = build_status(facts([PH]))
    server = StatusServer(
        StatusConfig(listen="127.0.0.1:0", max_request_bytes=512, request_timeout_s=0.3),
        lambda: doc,
    )
    task = asyncio.create_task(server.serve())
    await server.bound.wait()
    assert server.error is None and server.listening is not None
    port = int(server.listening.rsplit(":", 1)[1])
    try:
        got = await request(port, b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body = got.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in head
        assert json.loads(body) == doc
        metrics = await request(port, b"GET /metrics HTTP/1.1\r\n\r\n")
        assert b"text/plain; version=0.0.4" in metrics
        page = await request(port, b"GET / HTTP/1.1\r\n\r\n")
        assert b"<html" in page and b'fetch("/status"' in page
        assert (await request(port, b"HEAD /status HTTP/1.1\r\n\r\n")).endswith(b"\r\n\r\n")
        assert (await request(port, b"GET /etc/passwd HTTP/1.1\r\n\r\n")).startswith(
            b"HTTP/1.1 404"
        )
        post = await request(port, b"POST /status HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        assert post.startswith(b"HTTP/1.1 405") and b"Allow: GET, HEAD" in post
        huge = b"GET /status HTTP/1.1\r\nX: " + b"a" * 2000 + b"\r\n\r\n"
        assert (await request(port, huge)).startswith(b"HTTP/1.1 431")
        assert (await request(port, b"nonsense\r\n\r\n")).startswith(b"HTTP/1.1 400")
        # A client that never finishes its request head is dropped, unanswered.
        async with asyncio.timeout(5):
            assert await request(port, b"GET /status HTTP/1.1\r\n") == b""
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_taken_address_is_a_clear_error_and_the_server_steps_aside(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        server = StatusServer(StatusConfig(listen=listen), dict)
        async with asyncio.timeout(5):
            await server.serve()  # returns: the daemon goes on without it
    assert server.error is not None and f"cannot listen on {listen}" in server.error
    assert any(listen in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert server.facts() == {"listen": listen, "error": server.error}


def mqtt_source(port: int) -> MqttSource:
    return MqttSource(
        MqttConfig(host="127.0.0.1", port=port, client_id="health-views"),
        [
            MqttSensorConfig(id="node-1", topic="h/node-1", interval_s=1.0),
            MqttSensorConfig(id="{id}", topic="h/nodes/{id}", interval_s=1.0),
        ],
        device_id="rs-test",
        backoff=Backoff(0.05, 0.1),
    )


async def test_mqtt_tells_its_watched_sensors_a_broker_is_unreachable_then_lost(
    tmp_path: Path, sink: RecordingSink
) -> None:
    broker = Broker(tmp_path)
    source = mqtt_source(broker.port)  # nothing listens there yet
    task = asyncio.create_task(source.run(sink))
    try:
        await sink.wait_for(lambda: sink.rejects != [], what="the first failure")
        await asyncio.sleep(0.3)  # more failed attempts: still told once
        assert [(s, r) for s, r, _ in sink.rejects] == [("node-1", "broker-unreachable")]
        broker.start()
        await sink.wait_for(lambda: source.connected, within=10, what="a connection")
        broker.stop()
        await sink.wait_for(lambda: len(sink.rejects) >= 2, within=10, what="the loss")
        assert [(s, r) for s, r, _ in sink.rejects][1] == ("node-1", "broker-lost")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        broker.stop()


@pytest.mark.parametrize("family", ["ezo", "sdi12"])
async def test_a_serial_port_missing_from_the_start_is_told_once_as_port_unavailable(
    tmp_path: Path, sink: RecordingSink, family: str
) -> None:
    missing = tmp_path / "usb-nothing-here"
    if family == "ezo":
        src: EzoSource | Sdi12Source = EzoSource(
            EzoSensorConfig(id="ph-1", port=str(missing), circuit="ph"),
            backoff=Backoff(0.02, 0.05),
        )
    else:
        cfg = Sdi12SensorConfig(
            id="sonde-0",
            port=str(missing),
            address="0",
            quantities=(("temperature", "Cel"),),
            interval_s=1.0,
        )
        src = Sdi12Source([cfg], backoff=Backoff(0.02, 0.05))
    task = asyncio.create_task(src.run(sink))
    try:
        await sink.wait_for(lambda: sink.rejects != [], what="the first failure")
        await asyncio.sleep(0.3)  # several more attempts
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    ((sensor, reason, detail),) = sink.rejects
    assert sensor in ("ph-1", "sonde-0") and reason == "port-unavailable"
    assert str(missing) in detail


class CrashingProbe:
    """The source of sensor ``t-1``: crashes with a bug once, then stays quiet."""

    name = "t-1"

    def __init__(self) -> None:
        self.runs = 0

    async def run(self, sink: object) -> None:
        self.runs += 1
        if self.runs == 1:
            raise RuntimeError("driver bug: index out of range")
        await asyncio.Event().wait()


async def test_a_crashed_sensor_source_is_its_sensor_last_error(tmp_path: Path) -> None:
    (tmp_path / "gateway.toml").write_text("[device]\n")
    create_device_key(tmp_path / "device.key")
    config = GatewayConfig(
        path=tmp_path / "gateway.toml",
        key_file=tmp_path / "device.key",
        data_dir=tmp_path / "data",
        sensors=(EzoSensorConfig(id="t-1", port="/dev/null", circuit="rtd", interval_s=60.0),),
        status=StatusConfig(listen=""),
    )
    probe = CrashingProbe()
    gw = Gateway(config, sources=[probe], status_every_s=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop))
    try:
        async with asyncio.timeout(20):
            while probe.runs < 2:
                await asyncio.sleep(0.02)
        t1 = gw.status()["sensors"]["t-1"]
    finally:
        stop.set()
        await task
    assert t1["state"] == "waiting"  # the crash is no link: its allowance has not run out
    assert t1["errors"] == 1
    assert t1["last_error"]["reason"] == "source-stopped"
    assert "RuntimeError: driver bug" in t1["last_error"]["detail"]
