import asyncio
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest
import serial

from simulators.ezo import EzoCircuit
from simulators.ezo_pty import EzoPtyDevice
from simulators.pty_device import Loop, PtyDevice, PtyLink, Reply
from simulators.river import RiverModel

NOW = 1_767_272_400.0
RIVER = RiverModel(seed=42)
SCALE = 0.02


@contextmanager
def client(path: str | Path) -> Iterator[serial.Serial]:
    port = serial.Serial(str(path), 9600, timeout=2.0)
    try:
        yield port
    finally:
        port.close()


async def command(port: serial.Serial, text: bytes, until: bytes = b"*OK\r") -> bytes:
    """Send a command and read up to `until`, in a thread so the simulator keeps running."""
    await asyncio.to_thread(port.write, text)
    return await asyncio.to_thread(port.read_until, until)


def ezo(kind: str = "ph", **kwargs: object) -> EzoCircuit:
    return EzoCircuit(kind, RIVER, delay_scale=SCALE, **kwargs)  # type: ignore[arg-type]


async def test_link_feeds_handler_and_keeps_reply_order() -> None:
    received: list[bytes] = []

    def handler(data: bytes) -> list[Reply]:
        received.append(data)
        # A slow reply followed by an immediate one: order must survive the delay.
        return [Reply(0.2, b"slow\r"), Reply(0.0, b"fast\r")]

    async with PtyLink(handler) as link:
        assert link.device_path.startswith("/dev/pts/")
        with client(link.device_path) as port:
            started = time.monotonic()
            reply = await command(port, b"ping\r", until=b"fast\r")
            assert time.monotonic() - started >= 0.2
            assert reply == b"slow\rfast\r"
            link.write([Reply(0.0, b"unsolicited\r")])
            assert await asyncio.to_thread(port.read_until, b"\r") == b"unsolicited\r"
    assert b"".join(received) == b"ping\r"


async def test_link_survives_clients_coming_and_going() -> None:
    async with PtyLink(lambda data: [Reply(0.0, data.upper())]) as link:
        for _ in range(3):
            with client(link.device_path) as port:
                assert await command(port, b"abc\r", until=b"\r") == b"ABC\r"
        # No client at all: output is buffered or dropped, never an error.
        link.write([Reply(0.0, b"x" * 20_000)])
        await asyncio.sleep(0.1)
        with client(link.device_path) as port:
            assert await command(port, b"ok\r", until=b"\r") == b"OK\r"


async def test_ezo_identity_continuous_off_and_reading() -> None:
    async with EzoPtyDevice(ezo(), clock=lambda: NOW) as device:
        with client(device.device_path) as port:
            # Continuous mode is on from power-up: stale lines may precede the *OK.
            assert (await command(port, b"C,0\r")).endswith(b"*OK\r")
            assert await command(port, b"i\r") == b"?I,pH,2.16\r*OK\r"
            assert await command(port, b"R\r") == f"{RIVER.sample(NOW).ph:.3f}\r*OK\r".encode()
            await asyncio.sleep(1.3)
            assert port.in_waiting == 0  # continuous output really stopped


async def test_ezo_continuous_mode_streams_readings() -> None:
    async with EzoPtyDevice(ezo("rtd"), clock=lambda: NOW) as device:
        with client(device.device_path) as port:
            line = await asyncio.to_thread(port.read_until, b"\r")
            if line == b"*RE\r":  # power-up notice, if it was written after we opened
                line = await asyncio.to_thread(port.read_until, b"\r")
            assert line == f"{RIVER.sample(NOW).temperature_c:.3f}\r".encode()


async def test_ezo_reading_uses_the_clock_at_request_time() -> None:
    async with EzoPtyDevice(ezo("orp")) as device:
        with client(device.device_path) as port:
            await command(port, b"C,0\r")
            before = time.time()
            reading = await command(port, b"R\r")
            after = time.time()
            candidates = {f"{RIVER.sample(t).orp_mv:.1f}\r*OK\r".encode() for t in (before, after)}
            assert reading in candidates


async def test_ezo_faults_injected_at_runtime_reach_the_wire() -> None:
    async with EzoPtyDevice(ezo("ph"), clock=lambda: NOW) as device:
        with client(device.device_path) as port:
            await command(port, b"C,0\r")
            device.circuit.inject(error_next=1, spontaneous_reset=True)
            assert await command(port, b"R\r", until=b"*ER\r") == b"*RS\r*RE\r*ER\r"


async def test_unplug_and_replug_through_a_symlink(tmp_path: Path) -> None:
    link_path = tmp_path / "ph0"
    link_path.symlink_to("/nonexistent/old")  # a stale link from a previous run is replaced
    async with EzoPtyDevice(ezo("ph"), link_path) as device:
        first = device.device_path
        assert os.readlink(link_path) == first
        with client(link_path) as port:
            await command(port, b"C,0\r")
            await device.unplug()
            assert not link_path.exists()
            assert not device.link.plugged
            with pytest.raises(serial.SerialException):
                await asyncio.to_thread(port.read, 1)
        with pytest.raises(RuntimeError, match="no device"):
            _ = device.device_path

        await device.replug()
        assert os.readlink(link_path) == device.device_path
        with client(link_path) as port:
            # Settings survive the power cycle (EEPROM), so C,0 still holds; the
            # power-up *RE may land after our open flushed the port.
            reply = await command(port, b"C,?\r")
            assert reply in (b"?C,0\r*OK\r", b"*RE\r?C,0\r*OK\r")
            assert await command(port, b"i\r") == b"?I,pH,2.16\r*OK\r"
    assert not link_path.exists()


async def test_refuses_to_replace_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "ph0"
    path.write_text("keep me")
    with pytest.raises(FileExistsError):
        async with PtyLink(lambda data: [], path):
            pass
    assert path.read_text() == "keep me"


async def test_link_state_machine_rejects_misuse() -> None:
    link = PtyLink(lambda data: [])
    async with link:
        with pytest.raises(RuntimeError, match="replug"):
            await link.replug()
        await link.unplug()
        with pytest.raises(RuntimeError, match="unplug"):
            await link.unplug()
    with pytest.raises(RuntimeError, match="reopened"):
        async with link:
            pass


class _Upper(PtyDevice):
    """A protocol in a few lines: the base does the pty, the symlink and the tasks."""

    def __init__(self, link_path: Path | None = None) -> None:
        super().__init__(link_path)
        self.calls: list[str] = []

    def on_data(self, data: bytes) -> list[Reply]:
        return [Reply(0.0, data.upper())]

    async def _open(self) -> None:
        self.calls.append("open")

    async def _close(self) -> None:
        self.calls.append("close")

    def _started(self) -> None:
        self.calls.append("started")
        self.write([Reply(0.0, b"hello\r")])

    def _loops(self) -> Mapping[str, Loop]:
        return {"tick": self._tick}

    def _unplugged(self) -> None:
        self.calls.append("unplugged")

    def _replugged(self) -> None:
        self.calls.append("replugged")

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.3)
            self.write([Reply(0.0, b"tick\r")])


async def test_pty_device_base_runs_a_protocol_its_loops_and_hooks(tmp_path: Path) -> None:
    link_path = tmp_path / "upper0"
    async with _Upper(link_path) as device:
        assert device.calls == ["open", "started"]
        assert os.readlink(link_path) == device.device_path == device.link.device_path
        loops = [t for t in asyncio.all_tasks() if t.get_name().startswith("_Upper[")]
        assert [t.get_name() for t in loops] == [f"_Upper[{link_path}].tick"]
        with client(link_path) as port:
            # the power-up line may have been flushed by our open; a tick comes anyway
            lines = (await command(port, b"abc\r", until=b"ABC\r")).split(b"\r")
            assert lines[-2:] == [b"ABC", b""]
            assert set(lines[:-2]) <= {b"hello", b"tick"}
            assert await asyncio.to_thread(port.read_until, b"tick\r") == b"tick\r"
        await device.unplug()
        assert not link_path.exists()
        await device.replug()
        assert device.calls == ["open", "started", "unplugged", "replugged"]
        with client(link_path) as port:
            lines = (await command(port, b"x\r", until=b"X\r")).split(b"\r")
            assert lines[-2:] == [b"X", b""]
            assert set(lines[:-2]) <= {b"tick"}
    assert device.calls[-1] == "close"
    assert not link_path.exists()
    assert all(t.done() for t in loops)


async def test_pty_device_closes_what_it_opened_when_the_port_cannot_appear(
    tmp_path: Path,
) -> None:
    path = tmp_path / "upper0"
    path.write_text("keep me")
    device = _Upper(path)
    with pytest.raises(FileExistsError):
        async with device:
            pass
    assert device.calls == ["open", "close"]
    assert path.read_text() == "keep me"
