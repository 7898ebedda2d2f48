"""The simulated USB SDI-12 adapter: the pure state machine, then on a pty with
pyserial as the client, then the ``sensor-sim sdi12`` command."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from simulators.ezo import Reply
from simulators.river import RiverModel
from simulators.sdi12 import (
    SDI12_QUANTITIES,
    SONDE_MODELS,
    Sdi12Adapter,
    Sdi12PtyAdapter,
    Sonde,
    SondeModel,
    parse_sonde_spec,
    sdi12_crc,
)

REPO = Path(__file__).resolve().parents[2]
SIM = (sys.executable, "-m", "simulators.cli")
NOW = 1_767_272_400.0
RIVER = RiverModel(seed=11)
THREE = SondeModel("RIVERSIM", "WQ6", "110", ("temperature", "conductivity", "ph"), 5, 2.0)


def lines(replies: list[Reply]) -> list[bytes]:
    return [r.data for r in replies]


def bus(*sondes: Sonde, echo: bool = False) -> Sdi12Adapter:
    return Sdi12Adapter(sondes, echo=echo)


def test_identify_acknowledge_and_the_adapters_own_address() -> None:
    a = bus(Sonde("0", THREE, RIVER, serial="S123"))
    assert lines(a.receive(b"0!", 0.0)) == [b"0\r\n"]
    assert lines(a.receive(b"0I!", 0.0)) == [b"014RIVERSIMWQ6   110S123\r\n"]
    assert lines(a.receive(b"z!", 0.0)) == [b"z\r\n"]
    assert lines(a.receive(b"zI!", 0.0))[0].startswith(b"z14")
    assert a.receive(b"5!", 0.0) == []  # nobody there
    assert a.receive(b"0X!", 0.0) == []  # invalid command: silence
    assert lines(a.receive(b"\r\n0!\r", 0.0)) == [b"0\r\n"]  # terminators are ignored
    assert lines(a.receive(b"0", 0.0) + a.receive(b"!", 0.0)) == [b"0\r\n"]  # split writes


def test_m_measurement_service_request_and_data() -> None:
    s = Sonde("0", THREE, RIVER)
    a = bus(s)
    assert lines(a.receive(b"0M!", 10.0, NOW)) == [b"00053\r\n"]
    assert a.next_deadline() == pytest.approx(12.0)
    assert a.service_requests(11.9) == []
    assert lines(a.service_requests(12.0)) == [b"0\r\n"]
    assert a.next_deadline() is None
    (data,) = lines(a.receive(b"0D0!", 12.1))
    state = RIVER.sample(NOW)
    expected = (round(state.temperature_c, 2), round(state.ec_us_cm, 1), round(state.ph, 2))
    assert s.served == [expected]
    assert data == f"0{expected[0]:+.2f}{expected[1]:+.1f}{expected[2]:+.2f}\r\n".encode()
    assert lines(a.receive(b"0D1!", 12.2)) == [b"0\r\n"]  # nothing more
    assert lines(a.receive(b"0D0!", 12.3)) == [data]  # data kept until the next measurement


def test_a_break_aborts_an_unfinished_m_measurement_but_not_a_concurrent_one() -> None:
    m, c = Sonde("0", THREE, RIVER), Sonde("1", THREE, RIVER)
    a = bus(m, c)
    a.receive(b"1C!", 0.0)
    a.receive(b"0M!", 0.0)
    assert lines(a.receive(b"1!", 0.5)) == [b"1\r\n"]  # this also aborts 1's concurrent run
    assert a.next_deadline() is None  # 0's measurement was aborted by the break
    assert lines(a.receive(b"0D0!", 3.0)) == [b"0\r\n"]
    assert lines(a.receive(b"1D0!", 3.0)) == [b"1\r\n"]
    a.receive(b"1CC!", 4.0)
    a.receive(b"0!", 4.5)  # another sonde: the concurrent measurement continues
    (data,) = lines(a.receive(b"1D0!", 6.5))
    assert data.endswith(sdi12_crc(data[:-5]) + b"\r\n") and data.count(b"+") == 3
    a.receive(b"1C!", 7.0)
    assert lines(a.receive(b"1D0!", 7.1)) == [b"1\r\n"]  # asked too early: aborted


def test_concurrent_reply_shape_and_packing_limits() -> None:
    wide = SondeModel("RIVERSIM", "WQ9", "100", tuple(SDI12_QUANTITIES)[:8], 0, 0.0)
    s = Sonde("3", wide, RIVER)
    a = bus(s)
    assert lines(a.receive(b"3C!", 0.0)) == [b"300008\r\n"]
    (c_data,) = lines(a.receive(b"3D0!", 0.0))
    assert len(c_data) - 3 <= 75 and c_data.count(b"+") + c_data.count(b"-") == 8
    assert lines(a.receive(b"3M!", 0.0)) == [b"30008\r\n"]
    groups = [lines(a.receive(f"3D{i}!".encode(), 0.0))[0] for i in range(3)]
    assert all(len(g) - 3 <= 35 for g in groups)  # address + <= 35 chars + CR LF
    assert sum(g.count(b"+") + g.count(b"-") for g in groups) == 8
    assert lines(a.receive(b"3M1!", 0.0)) == [b"30000\r\n"]  # no extra measurement sets
    assert lines(a.receive(b"3IM!", 0.0)) == [b"30008\r\n"]
    assert lines(a.receive(b"3IMC_002!", 0.0)) == [
        b"3,conductivity,uS/cm;" + sdi12_crc(b"3,conductivity,uS/cm;") + b"\r\n"
    ]
    assert lines(a.receive(b"3IM_009!", 0.0)) == [b"3\r\n"]
    assert lines(a.receive(b"3R0!", 0.0)) == [b"3\r\n"]


def test_address_query_and_bus_contention() -> None:
    one = bus(Sonde("4", THREE, RIVER))
    assert lines(one.receive(b"?!", 0.0)) == [b"4\r\n"]
    two = bus(Sonde("4", THREE, RIVER), Sonde("7", THREE, RIVER))
    (garbled,) = lines(two.receive(b"?!", 0.0))
    assert garbled[0] & 0x80 and garbled.endswith(b"\r\n")
    assert lines(one.receive(b"4A9!", 0.0)) == [b"9\r\n"]
    assert lines(one.receive(b"9!", 0.0)) == [b"9\r\n"]


def test_faults() -> None:
    s = Sonde("0", SONDE_MODELS["turbidity"], RIVER, seed=5)
    a = bus(s)
    s.inject(garbage_next=1)
    noise, ack = lines(a.receive(b"0!", 0.0))
    assert all(b & 0x80 for b in noise[:-2]) and ack == b"0\r\n"
    s.inject(silent_next=2)
    assert a.receive(b"0!", 0.0) == [] and a.receive(b"0!", 0.0) == []
    assert lines(a.receive(b"0!", 0.0)) == [b"0\r\n"]
    s.inject(silent=True)
    assert a.receive(b"0I!", 0.0) == [] and a.receive(b"?!", 0.0) == []
    s.inject(silent=False)
    a.receive(b"0MC!", 0.0, NOW)
    (good,) = lines(a.receive(b"0D0!", 0.0))
    s.inject(wrong_crc_next=1)
    (bad,) = lines(a.receive(b"0D0!", 0.0))
    assert good[:-5] == bad[:-5] and good[-5:] != bad[-5:]
    s.inject(truncate_next=1)
    (cut,) = lines(a.receive(b"0D0!", 0.0))
    assert cut == good[: (len(good) - 2) // 2] + b"\r\n"
    s.inject(stuck_next=1, spike_next=1)
    a.receive(b"0M!", 0.0, NOW + 3600)
    assert s.served[-1][0] > 100 and s.served[-1][1] == s.served[-2][1]
    s.inject(slow_s=0.5)
    assert a.receive(b"0!", 0.0)[0].delay_s == pytest.approx(0.52)
    with pytest.raises(TypeError):
        s.inject(meltdown=1)


def test_echo_and_no_service_request() -> None:
    s = Sonde("0", THREE, RIVER)
    s.inject(no_service_request=True)
    a = bus(s, echo=True)
    assert lines(a.receive(b"0M!", 0.0)) == [b"0M!00053\r\n"]
    assert a.next_deadline() is None


def test_configuration_errors() -> None:
    with pytest.raises(ValueError, match="share an address"):
        bus(Sonde("z", THREE, RIVER))
    with pytest.raises(ValueError):
        Sonde("!", THREE, RIVER)
    with pytest.raises(ValueError):
        SondeModel("TOO-LONG-VENDOR", "X", "100", ("ph",))
    with pytest.raises(ValueError):
        SondeModel("V", "X", "100", ("salinity",))
    assert parse_sonde_spec("0") == ("0", "multi")
    assert parse_sonde_spec("b:ctd") == ("b", "ctd")
    for bad in ("?", "0:nope", "00:ctd"):
        with pytest.raises(ValueError):
            parse_sonde_spec(bad)


# -- on a pty ------------------------------------------------------------------------------


async def ask(port: serial.Serial, command: bytes) -> bytes:
    await asyncio.to_thread(port.write, command)
    return await asyncio.to_thread(port.read_until, b"\r\n")


async def test_on_a_pty_the_service_request_arrives_on_time_and_unplug_works(
    tmp_path: Path,
) -> None:
    link = tmp_path / "usb-sdi12"
    quick = SondeModel("RIVERSIM", "WQ6", "110", ("temperature",), 2, 0.2)
    host = Sdi12PtyAdapter(Sdi12Adapter([Sonde("0", quick, RIVER)]), link, clock=lambda: NOW)
    async with host:
        with serial.Serial(str(link), 9600, timeout=2.0) as port:
            assert await ask(port, b"0M!") == b"00021\r\n"
            assert await asyncio.to_thread(port.read_until, b"\r\n") == b"0\r\n"
            data = await ask(port, b"0D0!")
            assert data == f"0{round(RIVER.sample(NOW).temperature_c, 2):+.2f}\r\n".encode()
        await host.unplug()
        assert not link.exists()
        await host.replug()
        assert os.readlink(link) == host.device_path
        with serial.Serial(str(link), 9600, timeout=2.0) as port:
            assert await ask(port, b"0!") == b"0\r\n"
    assert not link.exists()


# -- sensor-sim sdi12 ----------------------------------------------------------------------


@pytest.fixture
def process() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_sensor_sim_sdi12_serves_until_signalled(
    tmp_path: Path, process: list[subprocess.Popen[str]]
) -> None:
    link = tmp_path / "sdi12"
    proc = subprocess.Popen(
        [*SIM, "sdi12", "--link", str(link), "--sonde", "0", "--sonde", "1:ctd"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    process.append(proc)
    assert proc.stdout is not None
    banner = proc.stdout.readline()
    assert re.fullmatch(
        rf"SDI-12 adapter on /dev/pts/\d+ \(link {re.escape(str(link))}\) with sondes 0, 1:ctd\n",
        banner,
    )
    with serial.Serial(str(link), 9600, timeout=2.0) as port:
        port.write(b"1I!")
        assert port.read_until(b"\r\n") == b"114RIVERSIMCT2   103SN00001\r\n"
        port.write(b"0C!")
        assert port.read_until(b"\r\n") == b"000106\r\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0


def test_sensor_sim_sdi12_refuses_a_bad_sonde(process: list[subprocess.Popen[str]]) -> None:
    result = subprocess.run(
        [*SIM, "sdi12", "--sonde", "0:nope"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 2
    assert "model 'nope'" in result.stderr
