"""``gateway check --probe``: a missing port, a refused broker (real Mosquitto, wrong password)
and a dead TSA (a closed port) are each reported with their cause; what answers is OK."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.keys import create_anchor_key, create_device_key
from simulators.ezo_pty import EzoPtyDevice
from tests.servers.anvil_node import AnvilNode
from tests.servers.broker import TlsBroker
from tests.servers.tsa_server import TestTsa

BASE = """\
[device]
key_file = "device.key"
data_dir = "data"

[mqtt]
host = "{host}"
port = {port}
username = "{user}"
password_file = "mqtt-password"
tls_ca = "{ca}"

[[anchor.rfc3161]]
name = "live"
url = "{live}"
roots = "{roots}"

[[anchor.rfc3161]]
name = "dead"
url = "http://127.0.0.1:{closed}/tsr"
roots = "{roots}"
timeout_s = 3
"""


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def station(tmp_path: Path, broker: TlsBroker, tsa: TestTsa, password: str) -> Path:
    create_device_key(tmp_path / "device.key")
    secret = tmp_path / "mqtt-password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        BASE.format(
            host=broker.host,
            port=broker.port,
            user=broker.username,
            ca=broker.ca,
            live=tsa.url(),
            roots=tsa.roots,
            closed=closed_port(),
        )
    )
    return cfg


def probe_lines(out: str) -> dict[str, str]:
    """``item -> "OK ..."/"FAILED ..."`` from the probe report."""
    return {
        m.group(2): f"{m.group(1)} {m.group(3)}"
        for m in re.finditer(r"^  (OK|FAILED) +(\S+(?: \S+)?) +\S+: (.*)$", out, re.M)
    }


def test_probe_reports_a_missing_port_a_refused_broker_and_a_dead_tsa(
    tmp_path: Path,
    mosquitto_tls: TlsBroker,
    tsa: TestTsa,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = station(tmp_path, mosquitto_tls, tsa, "not-the-password")
    with cfg.open("a") as f:
        f.write(
            '\n[[sensor]]\nid = "ph-1"\ndriver = "ezo"\ncircuit = "ph"\n'
            'port = "/dev/serial/by-id/usb-unplugged-if00"\n'
        )
    assert main(["check", "--config", str(cfg), "--probe"]) == 2  # the missing port is an error
    out = capsys.readouterr().out
    assert "sensor[0].port: sensor ph-1: /dev/serial/by-id/usb-unplugged-if00 does not exist" in out
    got = probe_lines(out)
    assert got["sensor ph-1"].startswith("FAILED ")
    assert "usb-unplugged-if00" in got["sensor ph-1"]
    # (Mosquitto answers a wrong password "not authorised", MQTT 3.1.1 code 5.)
    assert got["mqtt"].startswith("FAILED the broker refused the login: ")
    assert "check [mqtt] username and password" in got["mqtt"]
    assert got["rfc3161:dead"].startswith("FAILED TSA dead (http://127.0.0.1:")
    assert "ConnectError" in got["rfc3161:dead"]
    assert got["rfc3161:live"].startswith("OK timestamp 20")
    assert "not-the-password" not in out


def test_probe_says_ok_for_what_answers_and_exit_1_for_a_dead_tsa(
    tmp_path: Path,
    mosquitto_tls: TlsBroker,
    tsa: TestTsa,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = station(tmp_path, mosquitto_tls, tsa, mosquitto_tls.password)
    assert main(["check", "--config", str(cfg), "--probe"]) == 1  # only the dead TSA fails
    out = capsys.readouterr().out
    got = probe_lines(out)
    assert got["mqtt"] == f"OK connected and logged in as {mosquitto_tls.username}"
    assert got["rfc3161:live"].startswith("OK timestamp 20")
    assert got["rfc3161:dead"].startswith("FAILED ")
    assert re.search(r": 1 of 3 probe\(s\) failed$", out, re.M)
    assert mosquitto_tls.password not in out


def test_probe_asks_each_evm_endpoint_its_chain(
    tmp_path: Path, anvil: AnvilNode, capsys: pytest.CaptureFixture[str]
) -> None:
    """Real anvil: the right chain id is OK with its newest block; a wrong one is named."""
    create_device_key(tmp_path / "device.key")
    create_anchor_key(tmp_path / "anchor.key")
    cfg = tmp_path / "gateway.toml"
    tables = "".join(
        f'[[anchor.evm]]\nname = "{name}"\nchain_id = {chain}\nrpc = ["{anvil.url}"]\n'
        for name, chain in (("right", anvil.chain_id), ("wrong", anvil.chain_id + 1))
    )
    cfg.write_text("[device]\n" + tables)
    assert main(["check", "--config", str(cfg), "--probe"]) == 1
    got = probe_lines(capsys.readouterr().out)
    assert re.fullmatch(rf"OK chain {anvil.chain_id}, block \d+", got["evm:right"])
    assert got["evm:wrong"].startswith("FAILED ")
    assert f"serves chain {anvil.chain_id}, not the configured chain_id" in got["evm:wrong"]


async def test_probe_reads_a_serial_sensor_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A simulated EZO pH circuit on a real pty: one reading, shown with its value."""
    create_device_key(tmp_path / "device.key")
    link = tmp_path / "ph"
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        f'[device]\n[[sensor]]\nid = "ph-1"\ndriver = "ezo"\ncircuit = "ph"\nport = "{link}"\n'
    )
    async with EzoPtyDevice.for_river("ph", link, delay_scale=0.05):
        code = await asyncio.to_thread(main, ["check", "--config", str(cfg), "--probe"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert re.fullmatch(r"OK ph \d+(\.\d+)? pH", probe_lines(out)["sensor ph-1"])
