"""Health for the technician, on a real station: a real ``gateway run`` with an MQTT node
behind a real Mosquitto that refuses the gateway's password, and an EZO pH circuit on a
real pty whose simulator is unplugged after a few readings.

``gateway status`` (text and ``--json``), ``/status``, ``/metrics`` (read with the
Prometheus client's own parser) and the HTML page (rendered by headless Chromium, its
script having fetched ``/status``) must show the same figures and the real causes,
``broker-refused`` and ``link-lost``, which the signed gap records carry too. Once the
daemon is stopped, ``gateway status`` says so and still shows what the store knows.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.keys import create_device_key
from ledger_client.records import format_time
from simulators.ezo_pty import EzoPtyDevice
from tests.gateway.daemon_procs import records, start
from tests.servers.broker import MOSQUITTO, MOSQUITTO_PASSWD

GATEWAY = [sys.executable, "-m", "gateway"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_locked_broker(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    """Mosquitto on a plain localhost port that takes only user ``gateway``, password
    ``right-password``."""
    passwd = workdir / "passwd"
    subprocess.run(
        [MOSQUITTO_PASSWD, "-c", "-b", str(passwd), "gateway", "right-password"],
        check=True,
        capture_output=True,
    )
    passwd.chmod(0o600)
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        # Stay the current user: as root, mosquitto would drop to one that cannot read here.
        f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
        f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwd}\n"
        "persistence false\nlog_dest stderr\n"
    )
    with (workdir / "mosquitto.log").open("ab") as log:
        proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=log)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            assert proc.poll() is None, (workdir / "mosquitto.log").read_text()
            assert time.monotonic() < deadline, "mosquitto did not start listening"
            time.sleep(0.02)


def station_config(tmp_path: Path, broker_port: int, status_port: int, ph_port: Path) -> Path:
    create_device_key(tmp_path / "device.key")
    secret = tmp_path / "mqtt-password"
    secret.write_text("wrong-password\n")
    secret.chmod(0o600)
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        '[device]\nkey_file = "device.key"\ndata_dir = "data"\n'
        # A short gathering window: the EZO source waits for each commit before it polls again.
        "[log]\ncheckpoint_every_seconds = 0.5\ncommit_window_s = 0.02\n"
        f'[status]\nlisten = "127.0.0.1:{status_port}"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker_port}\nclient_id = "health-gw"\n'
        'username = "gateway"\npassword_file = "mqtt-password"\n'
        '[[sensor]]\nid = "node-1"\ndriver = "mqtt"\ntopic = "health/node-1"\ninterval_s = 1\n'
        f'[[sensor]]\nid = "ph-1"\ndriver = "ezo"\ncircuit = "ph"\nport = "{ph_port}"\n'
        "interval_s = 0.5\ntimeout_s = 0.5\n"
    )
    cfg.chmod(0o600)
    return cfg


async def wait_for(what: str, check: Any, within: float = 20.0) -> Any:
    """Poll ``check()`` (run in a thread: this loop serves the simulator) until truthy."""
    deadline = time.monotonic() + within
    while True:
        got = await asyncio.to_thread(check)
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as reply:
        body: bytes = reply.read()
        return body


def gateway_status(cfg: Path, *extra: str) -> str:
    done = subprocess.run(
        [*GATEWAY, "status", "--config", str(cfg), *extra],
        capture_output=True,
        timeout=30,
        check=True,
    )
    return done.stdout.decode()


def chromium_dom(url: str, profile: Path) -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed: run scripts/setup --dev", pytrace=False)
    done = subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=3000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )
    return done.stdout.decode()


class PageFigures(HTMLParser):
    """Per sensor card (``data-sensor``), the text of each ``data-field``; and the page's."""

    def __init__(self) -> None:
        super().__init__()
        self.sensors: dict[str, dict[str, str]] = {}
        self.page: dict[str, str] = {}
        self._sensor: str | None = None
        self._depth = 0
        self._field: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if self._sensor is not None:
            self._depth += 1
        elif a.get("data-sensor"):
            self._sensor, self._depth = a["data-sensor"], 1
            self.sensors[self._sensor] = {}
        field = a.get("data-field")
        if field:
            self._field = field
            self._where()[field] = ""

    def handle_endtag(self, tag: str) -> None:
        self._field = None
        if self._sensor is not None:
            self._depth -= 1
            if self._depth == 0:
                self._sensor = None

    def handle_data(self, data: str) -> None:
        if self._field is not None:
            self._where()[self._field] += data

    def _where(self) -> dict[str, str]:
        return self.page if self._sensor is None else self.sensors[self._sensor]


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_a_refused_broker_and_an_unplugged_probe_show_their_cause_in_every_view(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    broker_port, status_port = _free_port(), _free_port()
    broker = start_locked_broker(tmp_path, broker_port)
    try:
        await run_station(tmp_path, broker_port, status_port, procs)
    finally:
        broker.terminate()
        broker.wait(timeout=10)


async def run_station(
    tmp_path: Path, broker_port: int, status_port: int, procs: list[subprocess.Popen[bytes]]
) -> None:
    ph_port = tmp_path / "ph"
    db = tmp_path / "data" / "log.sqlite"
    base = f"http://127.0.0.1:{status_port}"

    def ph_readings() -> list[dict[str, Any]]:
        return [r for r in records(db) if r["kind"] == "reading" and r["sensor"] == "ph-1"]

    async with EzoPtyDevice.for_river("ph", ph_port, seed=4, delay_scale=0.02) as device:
        cfg = station_config(tmp_path, broker_port, status_port, ph_port)
        daemon = start(cfg, procs)
        await wait_for("three pH readings", lambda: len(ph_readings()) >= 3)
        await device.unplug()  # the USB adapter is pulled

        unplugged_at = format_time(time.time_ns())

        def gaps() -> dict[str, set[str]] | None:
            """Gap reasons per sensor; for ph-1 only those that end after the unplug (one
            while the circuit started, or between slow polls, says ``silent``: nothing
            explained those)."""
            found: dict[str, set[str]] = {}
            for r in records(db):
                if r["kind"] == "gap" and (r["sensor"] != "ph-1" or r["to"] > unplugged_at):
                    found.setdefault(r["sensor"], set()).add(r["reason"])
            return found if {"ph-1", "node-1"} <= found.keys() else None

        # The signed gap records name the real causes, not "silent".
        found = await wait_for("a gap record for each sensor", gaps)
        assert found["ph-1"] == {"link-lost"}, found
        assert found["node-1"] == {"broker-refused"}, found

        logged = len(ph_readings())
        # Status is stable now: nothing reports, the next gap records are a minute away.
        status = json.loads(await asyncio.to_thread(http_get, f"{base}/status"))
        metrics_text = (await asyncio.to_thread(http_get, f"{base}/metrics")).decode()
        cli_json = json.loads(await asyncio.to_thread(gateway_status, cfg, "--json"))
        cli_text = await asyncio.to_thread(gateway_status, cfg)
        dom = await asyncio.to_thread(chromium_dom, f"{base}/", tmp_path / "chromium")

    # /status: the states and the real last errors, the values with their unit and age.
    ph, node = status["sensors"]["ph-1"], status["sensors"]["node-1"]
    assert status["running"] is True and status["pid"] == daemon.pid
    assert ph["state"] == "link-lost"
    assert ph["last_error"]["reason"] == "link-lost"
    assert str(ph_port) in ph["last_error"]["detail"]
    assert ph["readings"] == logged  # every reading of this run, as the log holds them
    assert [(v["quantity"], v["unit"]) for v in ph["values"]] == [("ph", "pH")]
    last = ph_readings()[-1]
    assert ph["values"][0]["value"] == last["values"][0]["v"]
    assert ph["age_s"] > 0
    assert node["state"] == "broker-refused"
    assert node["readings"] == 0 and node["errors"] == 1
    assert "refused the login" in node["last_error"]["detail"]
    assert status["checkpoint"]["size"] <= status["log_size"]
    assert status["clock"] in ("synced", "unsynced", "unknown")
    assert status["disk"]["used_bytes"] > 0

    # gateway status --json: the same document, asked of the daemon.
    for name in ("ph-1", "node-1"):
        for key in ("state", "readings", "errors", "values", "last_error"):
            want, got = status["sensors"][name][key], cli_json["sensors"][name][key]
            if key == "last_error":
                want, got = dict(want, age_s=None), dict(got, age_s=None)
            assert got == want, (name, key)
    assert cli_json["log_size"] == status["log_size"]
    assert cli_json["pid"] == daemon.pid

    # /metrics, read by Prometheus's own parser: the same figures.
    m = metric_samples(metrics_text)
    assert m[("riverseal_log_entries", ())] == status["log_size"]
    for name, s in status["sensors"].items():
        sensor = (("sensor", name),)
        assert m[("riverseal_sensor_readings_total", sensor)] == s["readings"]
        assert m[("riverseal_sensor_errors_total", sensor)] == s["errors"]
        assert m[("riverseal_sensor_state", (("sensor", name), ("state", s["state"])))] == 1
        assert m[("riverseal_sensor_state", (("sensor", name), ("state", "ok")))] == 0
    lost = (("reason", "link-lost"), ("sensor", "ph-1"))
    assert m[("riverseal_sensor_rejected_total", lost)] == 1
    age = m[("riverseal_sensor_last_reading_age_seconds", (("sensor", "ph-1"),))]
    assert ph["age_s"] <= age < ph["age_s"] + 10
    value = (("quantity", "ph"), ("sensor", "ph-1"), ("unit", "pH"))
    assert m[("riverseal_sensor_value", value)] == ph["values"][0]["value"]
    assert ("riverseal_sensor_last_reading_age_seconds", (("sensor", "node-1"),)) not in m

    # gateway status (text): the same figures, in words.
    assert f"daemon:      running, pid {daemon.pid}" in cli_text
    assert "sensor:      ph-1: link-lost" in cli_text
    assert f"  counts:    {ph['readings']} readings, {ph['errors']} errors" in cli_text
    assert f"  last:      {ph['values'][0]['value']} pH at {ph['last_reading']}" in cli_text
    assert f"  last error: link-lost at {ph['last_error']['time']}" in cli_text
    assert "sensor:      node-1: broker-refused" in cli_text
    assert "  counts:    0 readings, 1 errors" in cli_text
    assert f"log:         {status['log_size']} entries" in cli_text
    assert "{'" not in cli_text  # no Python dicts

    # The page, after its script fetched /status in Chromium.
    page = PageFigures()
    page.feed(dom)
    assert page.page["log_size"] == str(status["log_size"])
    for name, s in status["sensors"].items():
        card = page.sensors[name]
        assert card["state"] == s["state"]
        assert card["readings"] == str(s["readings"])
        assert card["errors"] == str(s["errors"])
        assert card["last_error_reason"] == s["last_error"]["reason"]
    assert page.sensors["ph-1"]["values"] == f"{ph['values'][0]['value']} pH"

    # Stopped: status says so, and shows the store's log and the sensors as last seen.
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=20) == 0
    down = gateway_status(cfg)
    assert "daemon not running (last status at " in down
    assert "sensor:      ph-1: link-lost" in down
    size = len(records(db))
    assert f"log:         {size} entries" in down
    down_json = json.loads(gateway_status(cfg, "--json"))
    assert down_json["running"] is False and down_json["log_size"] == size
