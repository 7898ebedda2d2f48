import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest
import serial

from simulators.cli import build_parser, main
from tests.servers.broker import Broker

REPO = Path(__file__).resolve().parents[2]


def sensor_sim(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "simulators.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:  # never leave a simulator behind after a failed test
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ezo_runs_on_a_pty_until_signalled(
    tmp_path: Path, processes: list[subprocess.Popen[str]], sig: signal.Signals
) -> None:
    link = tmp_path / "ph0"
    proc = sensor_sim("ezo", "--kind", "ph", "--link", str(link), "--delay-scale", "0.02")
    processes.append(proc)
    assert proc.stdout is not None
    banner = proc.stdout.readline()
    assert re.fullmatch(rf"ph EZO on /dev/pts/\d+ \(link {re.escape(str(link))}\)\n", banner)
    assert os.readlink(link) == banner.split()[3]
    with serial.Serial(str(link), 9600, timeout=2.0) as port:
        port.write(b"C,0\r")
        assert port.read_until(b"*OK\r").endswith(b"*OK\r")
        port.write(b"i\r")
        assert port.read_until(b"*OK\r") == b"?I,pH,2.16\r*OK\r"
    proc.send_signal(sig)
    assert proc.wait(timeout=10) == 0
    assert not link.exists()


def test_ezo_options_reach_the_circuit(processes: list[subprocess.Popen[str]]) -> None:
    proc = sensor_sim("ezo", "--kind", "do", "--upper-case", "--delay-scale", "0.02")
    processes.append(proc)
    assert proc.stdout is not None
    banner = proc.stdout.readline()
    assert re.fullmatch(r"do EZO on /dev/pts/\d+\n", banner)
    with serial.Serial(banner.split()[3], 9600, timeout=2.0) as port:
        port.write(b"C,0\r")
        port.read_until(b"*OK\r")
        port.write(b"O,?\r")
        assert port.read_until(b"*OK\r") == b"?,O,MG\r*OK\r"
    proc.terminate()
    assert proc.wait(timeout=10) == 0


def test_ezo_refuses_to_overwrite_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "ph0"
    path.write_text("not a link")
    assert main(["ezo", "--kind", "ph", "--link", str(path)]) == 1
    assert path.read_text() == "not a link"


def test_parser_rejects_unknown_kind_and_quantity() -> None:
    with pytest.raises(SystemExit) as kind:
        build_parser().parse_args(["ezo", "--kind", "nh4"])
    assert kind.value.code == 2
    with pytest.raises(SystemExit) as quantity:
        main(["mqtt", "--quantities", "temperature,salinity"])
    assert quantity.value.code == 2


@pytest.mark.broker
async def test_mqtt_publishes_count_messages_then_exits(mosquitto: Broker) -> None:
    topic = "riverseal/site1/cli"
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="cli-sub") as sub:
        await sub.subscribe(topic, qos=1)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "simulators.cli", "mqtt",
            "--port", str(mosquitto.port), "--topic", topic, "--interval", "0.05",
            "--count", "3", "--quantities", "temperature,turbidity",
            stdout=asyncio.subprocess.DEVNULL, cwd=REPO,
        )  # fmt: skip
        bodies = []
        async with asyncio.timeout(15):
            async for message in sub.messages:
                assert isinstance(message.payload, bytes)
                bodies.append(json.loads(message.payload))
                if len(bodies) == 3:
                    break
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    assert [b["seq"] for b in bodies] == [0, 1, 2]
    assert [[v["q"] for v in b["values"]] for b in bodies] == [["temperature", "turbidity"]] * 3


@pytest.mark.broker
def test_mqtt_runs_until_signalled(
    mosquitto: Broker, processes: list[subprocess.Popen[str]]
) -> None:
    proc = sensor_sim("mqtt", "--port", str(mosquitto.port), "--interval", "0.1")
    processes.append(proc)
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("MQTT node node1 -> 127.0.0.1:")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0
