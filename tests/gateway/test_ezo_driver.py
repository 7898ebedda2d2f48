"""EzoSource over real pty pairs.

A minimal scripted EZO circuit (``FakeEzo``) answers on the pty master; the
driver opens the slave through a symlink that plays ``/dev/serial/by-id``.
The last tests drive the full simulator (simulators.EzoPtyDevice)
and compare readings with the river model it serves.
"""

from __future__ import annotations

import asyncio
import os
import random
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gateway.backoff import Backoff, backoff_bound
from gateway.config import EzoSensorConfig
from gateway.drivers.ezo.source import EzoSource
from gateway.drivers.link.serial import SerialLink
from gateway.errors import ProtocolError, SensorError, SensorTimeout
from gateway.pipeline import Value
from simulators.ezo import EzoCircuit
from simulators.ezo_pty import EzoPtyDevice
from simulators.river import RiverModel

if TYPE_CHECKING:
    from tests.gateway.recording_sink import RecordingSink

REPLY_DELAY_S = 0.02


class FakeEzo:
    """A scripted EZO circuit on the master side of a pty it creates.

    ``script`` maps the number of the ``R`` (1-based) to what to send instead
    of a plain reading: ``"garbage"``, ``"er"``, ``"silent"``, ``"reboot"``,
    ``"overlong"``, ``"two-lines"``.
    """

    def __init__(
        self,
        link: Path,
        *,
        type_id: str = "pH",
        firmware: str = "2.16",
        outputs: str = "",
        reading: Callable[[int], str] = lambda n: f"{7 + n / 1000:.3f}",
        continuous: bool = False,
        asleep: bool = False,
    ) -> None:
        self.link = link
        self.type_id = type_id
        self.firmware = firmware
        self.outputs = outputs
        self.reading = reading
        self.continuous = continuous
        self.asleep = asleep
        self.script: dict[int, str] = {}
        self.silent_from: int | None = None  # R number from which R goes unanswered
        self.commands: list[tuple[float, str]] = []
        self.reads = 0
        self.master = -1
        self._slave = -1
        self._buffer = b""
        self._stale_task: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()

    # -- pty ------------------------------------------------------------------

    def plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self.master, self._slave = master, slave
        tmp = self.link.with_name(self.link.name + ".tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(slave))
        tmp.replace(self.link)
        self._loop.add_reader(master, self._on_readable)
        if self.continuous:
            self._stale_task = self._loop.create_task(self._stale_lines(), name="fake-ezo.stale")

    def unplug(self) -> None:
        if self.master < 0:
            return
        self._loop.remove_reader(self.master)
        os.close(self.master)
        os.close(self._slave)
        self.master = self._slave = -1
        self.link.unlink(missing_ok=True)
        if self._stale_task is not None:
            self._stale_task.cancel()

    def send(self, data: bytes) -> None:
        if self.master >= 0:
            os.write(self.master, data)

    def later(self, data: bytes, delay: float = REPLY_DELAY_S) -> None:
        self._loop.call_later(delay, self.send, data)

    async def _stale_lines(self) -> None:
        while self.continuous:
            self.send(b"1.111\r")  # an old continuous-mode reading
            await asyncio.sleep(0.01)

    # -- the circuit -----------------------------------------------------------

    def _on_readable(self) -> None:
        try:
            data = os.read(self.master, 1024)
        except OSError:
            return
        for byte in data:
            if self.asleep:
                self.asleep = False  # the waking byte is consumed
                self.later(b"*WA\r", 0.0)
            elif byte == 0x0D:
                command, self._buffer = self._buffer.decode(), b""
                self.commands.append((self._loop.time(), command))
                self._answer(command)
            else:
                self._buffer += bytes([byte])

    def command_names(self) -> list[str]:
        return [c for _, c in self.commands]

    def _answer(self, command: str) -> None:
        c = command.upper()
        if c in ("*OK,1", "C,0"):
            if c == "C,0":
                self.continuous = False
            self.later(b"*OK\r")
        elif c == "I":
            self.later(f"?I,{self.type_id},{self.firmware}\r*OK\r".encode())
        elif c == "O,?":
            self.later(f"{self.outputs}\r*OK\r".encode())
        elif c == "R":
            self.reads += 1
            self._answer_read(self.reads)
        else:
            self.later(b"*ER\r")

    def _answer_read(self, n: int) -> None:
        action = self.script.get(n, "")
        if self.silent_from is not None and n >= self.silent_from:
            return
        line = f"{self.reading(n)}\r".encode()
        if action == "silent":
            return
        if action == "er":
            self.later(b"*ER\r")
        elif action == "garbage":
            self.later(b"\xb0\xc3\x9f\x01\r7.x\r" + line + b"*OK\r")
        elif action == "overlong":
            self.later(b"9" * 400 + b"\r" + line + b"*OK\r")
        elif action == "reboot":
            self.later(b"*RS\r*RE\r")
        elif action == "two-lines":
            self.later(b"1.111\r" + line + b"*OK\r")
        else:
            self.later(line + b"*OK\r")


@pytest.fixture
def link(tmp_path: Path) -> Path:
    return tmp_path / "usb-Atlas_EZO-if00-port0"


@pytest.fixture
def fakes() -> Iterator[list[FakeEzo]]:
    made: list[FakeEzo] = []
    yield made
    for fake in made:
        fake.unplug()


def make_fake(fakes: list[FakeEzo], link: Path, **kwargs: object) -> FakeEzo:
    fake = FakeEzo(link, **kwargs)  # type: ignore[arg-type]
    fake.plug()
    fakes.append(fake)
    return fake


def source(
    link: Path, circuit: str = "ph", interval: float = 0.1, timeout: float = 0.3, **kwargs: object
) -> EzoSource:
    config = EzoSensorConfig(
        id=f"{circuit}-1",
        port=str(link),
        circuit=circuit,  # type: ignore[arg-type]
        interval_s=interval,
        timeout_s=timeout,
    )
    return EzoSource(config, backoff=Backoff(0.02, 0.1), **kwargs)  # type: ignore[arg-type]


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_readings_arrive_on_a_fixed_cadence(
    link: Path, fakes: list[FakeEzo], sink: RecordingSink
) -> None:
    fake = make_fake(fakes, link)
    src = source(link, interval=0.1)
    assert src.name == "ph-1"
    task = asyncio.create_task(src.run(sink), name="ezo-under-test")
    await sink.wait_for(lambda: len(sink.readings) >= 6)
    await stop(task)

    assert fake.command_names()[:4] == ["*OK,1", "C,0", "i", "R"]
    assert src.identity == ("PH", "2.16")
    for n, reading in enumerate(sink.readings[:6], start=1):
        assert reading.sensor == "ph-1"
        assert reading.values == (Value("ph", 7 + n / 1000, "pH"),)
        assert reading.raw == f"{7 + n / 1000:.3f}"
        assert reading.src_seq is None
        assert reading.sensor_time is None
    assert sink.rejects == []
    # Fixed cadence: each answer takes REPLY_DELAY_S, yet five intervals are 0.5 s, not 0.6 s.
    polls = [t for t, c in fake.commands if c == "R"]
    assert polls[5] - polls[0] == pytest.approx(0.5, abs=0.05)
    gaps_ns = [
        b.received_ns - a.received_ns
        for a, b in zip(sink.readings, sink.readings[1:], strict=False)
    ]
    assert all(50e6 < g < 150e6 for g in gaps_ns), gaps_ns


@pytest.mark.parametrize(
    ("circuit", "type_id", "outputs", "text", "values"),
    [
        ("orp", "ORP", "", "225.4", (Value("orp", 225.4, "mV"),)),
        ("rtd", "RTD", "", "25.104", (Value("temperature", 25.104, "Cel"),)),
        (
            "ec",
            "EC",
            "?,O,EC,SG",
            "412.0,1.025",
            (Value("ec", 412.0, "uS/cm"), Value("specific_gravity", 1.025, "1")),
        ),
        (
            "do",
            "D.O.",
            "?O,%,mg",
            "8.93,95.1",
            (Value("do", 8.93, "mg/l"), Value("do_sat", 95.1, "/100")),
        ),
        ("do", "DO", "?,O,mg", "8.93", (Value("do", 8.93, "mg/l"),)),
    ],
)
async def test_circuits_and_outputs(
    link: Path,
    fakes: list[FakeEzo],
    sink: RecordingSink,
    circuit: str,
    type_id: str,
    outputs: str,
    text: str,
    values: tuple[Value, ...],
) -> None:
    fake = make_fake(fakes, link, type_id=type_id, outputs=outputs, reading=lambda n: text)
    task = asyncio.create_task(source(link, circuit, interval=0.05).run(sink))
    await sink.wait_for(lambda: len(sink.readings) >= 2)
    await stop(task)
    assert sink.readings[0].values == values
    assert sink.readings[0].raw == text
    assert ("O,?" in fake.command_names()) == (circuit in ("do", "ec"))
    assert sink.rejects == []


async def test_no_output_is_rejected(link: Path, fakes: list[FakeEzo], sink: RecordingSink) -> None:
    make_fake(fakes, link, type_id="EC", outputs="?,O,", reading=lambda n: "no output")
    task = asyncio.create_task(source(link, "ec", interval=0.05).run(sink))
    await sink.wait_for(lambda: sink.reject_counts()["no-output"] >= 2)
    await stop(task)
    assert sink.readings == []


async def test_garbage_and_error_replies_are_rejected_and_polling_goes_on(
    link: Path, fakes: list[FakeEzo], sink: RecordingSink
) -> None:
    fake = make_fake(fakes, link)
    fake.script = {2: "garbage", 3: "er", 4: "overlong", 5: "er"}
    task = asyncio.create_task(source(link, interval=0.05).run(sink))
    await sink.wait_for(lambda: fake.reads >= 7 and len(sink.readings) >= 5)
    await stop(task)

    counts = sink.reject_counts()
    # poll 2: a binary line and a non-number ("7.x"); poll 4: one overlong line
    assert counts == {"garbage": 3, "error-reply": 2}
    details = [d for _, r, d in sink.rejects if r == "garbage"]
    assert "non-ASCII byte 0xb0" in details[0]
    assert "'7.x' is not a number" in details[1]
    assert "longer than 256 bytes" in details[2]
    # the reading behind the garbage still counts; polls 3 and 5 gave none
    raws = [r.raw for r in sink.readings]
    assert raws[:4] == ["7.001", "7.002", "7.004", "7.006"]


async def test_stale_continuous_lines_are_discarded(
    link: Path, fakes: list[FakeEzo], sink: RecordingSink
) -> None:
    fake = make_fake(fakes, link, continuous=True)
    fake.send(b"1.111\r1.111\r")  # already waiting when the port opens
    fake.script = {2: "two-lines"}  # a stale line just before the answer
    task = asyncio.create_task(source(link, interval=0.05).run(sink))
    await sink.wait_for(lambda: len(sink.readings) >= 3)
    await stop(task)
    assert "C,0" in fake.command_names()
    assert [r.raw for r in sink.readings[:3]] == ["7.001", "7.002", "7.003"]
    # the stale line before poll 2's answer is counted, not silently dropped
    assert sink.rejects == [("ph-1", "extra-line", "'1.111' replaced by a later line")]


async def test_sleeping_circuit_is_woken(
    link: Path, fakes: list[FakeEzo], sink: RecordingSink
) -> None:
    fake = make_fake(fakes, link, asleep=True)
    task = asyncio.create_task(source(link, interval=0.05).run(sink))
    await sink.wait_for(lambda: len(sink.readings) >= 1)
    await stop(task)
    # the first "*OK,1" lost its "*" to the wake-up and was answered *ER; it was sent again
    assert fake.command_names()[:3] == ["OK,1", "*OK,1", "C,0"]
    assert sink.rejects == []


async def test_identity_mismatch_is_reported_and_retried(
    link: Path, fakes: list[FakeEzo], sink: RecordingSink
) -> None:
    fake = make_fake(fakes, link, type_id="EC", firmware="2.15")
    task = asyncio.create_task(source(link, "ph", identity_retry_s=0.05).run(sink))
    await sink.wait_for(lambda: sink.reject_counts()["identity-mismatch"] >= 2)
    await stop(task)
    assert sink.readings == []
    assert "R" not in fake.command_names()
    sensor, _, detail = sink.rejects[0]
    assert sensor == "ph-1"
    assert "EZO-EC (firmware 2.15)" in detail
    assert "'ph'" in detail
    assert str(link) in detail


async def test_reboot_reruns_the_start_sequence(
    link: Path, fakes: list[FakeEzo], sink: RecordingSink
) -> None:
    fake = make_fake(fakes, link)
    fake.script = {2: "reboot"}
    task = asyncio.create_task(source(link, interval=0.05).run(sink))
    await sink.wait_for(lambda: len(sink.readings) >= 3)
    await stop(task)
    names = fake.command_names()
    assert names.count("*OK,1") == 2
    assert names[:9] == ["*OK,1", "C,0", "i", "R", "R", "*OK,1", "C,0", "i", "R"]
    assert [r.raw for r in sink.readings[:2]] == ["7.001", "7.003"]
    assert sink.rejects == []


async def test_timeouts_are_rejected_then_the_port_is_reopened(
    link: Path, fakes: list[FakeEzo], sink: RecordingSink
) -> None:
    fake = make_fake(fakes, link)
    fake.script = {2: "silent", 4: "silent", 5: "silent"}
    task = asyncio.create_task(source(link, interval=0.05, timeout=0.1, max_timeouts=2).run(sink))
    await sink.wait_for(lambda: len(sink.readings) >= 3)
    await stop(task)
    assert sink.reject_counts() == {"timeout": 3}
    names = fake.command_names()
    # one timeout is tolerated; two in a row reopen the port and start again
    assert names.count("*OK,1") == 2
    assert [r.raw for r in sink.readings[:3]] == ["7.001", "7.003", "7.006"]


async def test_unplug_and_replug_at_the_same_path(
    link: Path, fakes: list[FakeEzo], sink: RecordingSink
) -> None:
    first = make_fake(fakes, link)
    task = asyncio.create_task(source(link, interval=0.05).run(sink))
    await sink.wait_for(lambda: len(sink.readings) >= 2)
    old_device = os.readlink(link)
    first.unplug()
    await asyncio.sleep(0.3)  # the driver finds the port gone and keeps trying
    assert not task.done()
    count = len(sink.readings)

    second = make_fake(fakes, link, reading=lambda n: f"{8 + n / 1000:.3f}")
    await sink.wait_for(lambda: len(sink.readings) >= count + 2)
    assert not task.done()
    await stop(task)
    assert os.readlink(link) != old_device or second.master != first.master
    assert second.command_names()[:4] == ["*OK,1", "C,0", "i", "R"]
    assert sink.readings[-1].raw is not None
    assert sink.readings[-1].raw.startswith("8.")
    # The unplug is told once, for the whole outage, naming the port; nothing else is refused.
    ((sensor, reason, detail),) = sink.rejects
    assert (sensor, reason) == ("ph-1", "link-lost")
    assert str(link) in detail


async def test_missing_port_is_retried_until_it_appears(
    link: Path, fakes: list[FakeEzo], sink: RecordingSink
) -> None:
    task = asyncio.create_task(source(link, interval=0.05).run(sink))
    await asyncio.sleep(0.2)
    assert not task.done()
    make_fake(fakes, link)
    await sink.wait_for(lambda: len(sink.readings) >= 1)
    await stop(task)


async def test_cancel_closes_the_port(
    link: Path, fakes: list[FakeEzo], sink: RecordingSink
) -> None:
    fake = make_fake(fakes, link)
    task = asyncio.create_task(source(link, interval=0.05).run(sink))
    await sink.wait_for(lambda: len(sink.readings) >= 1)
    await stop(task)
    # with the driver gone nobody holds the slave but the fake; the port can be reopened
    again = asyncio.create_task(source(link, interval=0.05).run(sink))
    await sink.wait_for(lambda: len(sink.readings) >= 3)
    await stop(again)
    assert fake.command_names().count("*OK,1") == 2
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert [t.get_name() for t in others if not t.get_name().startswith("fake-ezo")] == []


# -- against the full simulator --------------------------------------------------------

SIM_NOW = 1_767_272_400.0


@pytest.mark.parametrize(
    ("circuit", "expected"),
    [
        ("ph", lambda s: (Value("ph", round(s.ph, 3), "pH"),)),
        ("orp", lambda s: (Value("orp", round(s.orp_mv, 1), "mV"),)),
        ("rtd", lambda s: (Value("temperature", round(s.temperature_c, 3), "Cel"),)),
        ("do", lambda s: (Value("do", round(s.do_mg_l, 2), "mg/l"),)),
        ("ec", lambda s: (Value("ec", round(s.ec_us_cm, 1), "uS/cm"),)),
    ],
)
async def test_simulator_readings_match_the_river(
    link: Path, sink: RecordingSink, circuit: str, expected: Callable[[object], tuple[Value, ...]]
) -> None:
    river = RiverModel(seed=7)
    circuit_sim = EzoCircuit(circuit, river, delay_scale=0.02)
    async with EzoPtyDevice(circuit_sim, link, clock=lambda: SIM_NOW):
        task = asyncio.create_task(source(link, circuit, interval=0.1, timeout=0.5).run(sink))
        await sink.wait_for(lambda: len(sink.readings) >= 3)
        await stop(task)
    state = river.sample(SIM_NOW)
    for reading in sink.readings:
        assert reading.values == expected(state)
    assert sink.rejects == []


async def test_simulator_faults_and_replug(link: Path, sink: RecordingSink) -> None:
    river = RiverModel(seed=7)
    circuit_sim = EzoCircuit("ph", river, delay_scale=0.02)
    async with EzoPtyDevice(circuit_sim, link, clock=lambda: SIM_NOW) as device:
        task = asyncio.create_task(source(link, interval=0.1, timeout=0.5).run(sink))
        await sink.wait_for(lambda: len(sink.readings) >= 1)
        circuit_sim.inject(error_next=1, garbage_next=1, stale_lines=2)
        await sink.wait_for(lambda: sink.reject_counts()["error-reply"] >= 1)
        await sink.wait_for(lambda: sink.reject_counts()["garbage"] >= 1)
        n = len(sink.readings)
        await sink.wait_for(lambda: len(sink.readings) >= n + 1)
        circuit_sim.inject(spontaneous_reset=True)
        n = len(sink.readings)
        await sink.wait_for(lambda: len(sink.readings) >= n + 2)
        await device.unplug()
        await asyncio.sleep(0.3)
        await device.replug()
        n = len(sink.readings)
        await sink.wait_for(lambda: len(sink.readings) >= n + 2)
        assert not task.done()
        await stop(task)
    value = round(river.sample(SIM_NOW).ph, 3)
    assert {r.values for r in sink.readings} == {(Value("ph", value, "pH"),)}
    assert set(sink.reject_counts()) <= {"error-reply", "garbage", "extra-line", "link-lost"}
    assert sink.reject_counts()["link-lost"] == 1  # the replug: once per outage
    assert sink.reject_counts()["extra-line"] >= 1  # the two stale lines before an answer


async def test_old_firmware_gets_response_1(
    link: Path, fakes: list[FakeEzo], sink: RecordingSink
) -> None:
    fake = make_fake(fakes, link)
    original = fake._answer

    def old_firmware(command: str) -> None:
        if command.upper() == "*OK,1":
            fake.later(b"*ER\r")
        elif command.upper() == "RESPONSE,1":
            fake.later(b"*OK\r")
        else:
            original(command)

    fake._answer = old_firmware  # type: ignore[method-assign]
    task = asyncio.create_task(source(link, interval=0.05).run(sink))
    await sink.wait_for(lambda: len(sink.readings) >= 1)
    await stop(task)
    assert fake.command_names()[:4] == ["*OK,1", "*OK,1", "RESPONSE,1", "C,0"]


# -- the serial link and the back-off on their own -----------------------------------------


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        yield master, os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


async def test_link_splits_lines_and_drops_empty_ones(pty_pair: tuple[int, str]) -> None:
    master, path = pty_pair
    async with SerialLink(path, 9600, sensor="s") as port:
        os.write(master, b"one\r\ntwo\n\r\rthr")
        assert await port.readline(1.0) == b"one"
        assert await port.readline(1.0) == b"two"
        os.write(master, b"ee\r")
        assert await port.readline(1.0) == b"three"
        with pytest.raises(SensorTimeout):
            await port.readline(0.05)
        await port.write(b"R\r")
        assert os.read(master, 100) == b"R\r"


async def test_link_discards_overlong_lines_in_pieces(pty_pair: tuple[int, str]) -> None:
    master, path = pty_pair
    async with SerialLink(path, 9600, sensor="s", max_line=16) as port:
        os.write(master, b"x" * 10)
        await asyncio.sleep(0.02)
        os.write(master, b"x" * 10)  # over the limit before its terminator arrives
        await asyncio.sleep(0.02)
        os.write(master, b"x" * 50 + b"\rok\r" + b"y" * 17 + b"\rfine\r")
        with pytest.raises(ProtocolError, match="longer than 16 bytes"):
            await port.readline(1.0)
        assert await port.readline(1.0) == b"ok"
        with pytest.raises(ProtocolError):
            await port.readline(1.0)
        assert await port.readline(1.0) == b"fine"


async def test_link_discard_input(pty_pair: tuple[int, str]) -> None:
    master, path = pty_pair
    async with SerialLink(path, 9600, sensor="s") as port:
        os.write(master, b"stale\rstale\rhalf")
        await asyncio.sleep(0.05)
        port.discard_input()
        os.write(master, b"new\r")
        assert await port.readline(1.0) == b"new"


async def test_link_reports_hangup_and_missing_ports(tmp_path: Path) -> None:
    with pytest.raises(SensorError, match="cannot open"):
        async with SerialLink(str(tmp_path / "nothing"), 9600, sensor="s"):
            pass
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    async with SerialLink(path, 9600, sensor="s") as port:
        os.write(master, b"last\r")
        await asyncio.sleep(0.05)
        os.close(master)
        os.close(slave)
        assert await port.readline(1.0) == b"last"  # lines before the hang-up still count
        with pytest.raises(SensorError) as info:
            await port.readline(1.0)
        assert not isinstance(info.value, SensorTimeout)
        with pytest.raises(SensorError):
            await port.write(b"R\r")


def test_backoff_bounds_grow_to_the_cap_and_reset() -> None:
    assert [backoff_bound(n, 0.5, 30.0) for n in range(8)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        16.0,
        30.0,
        30.0,
    ]
    assert backoff_bound(10_000, 0.5, 30.0) == 30.0
    b = Backoff(0.5, 30.0, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(10)]
    assert all(0 <= d <= backoff_bound(n, 0.5, 30.0) for n, d in enumerate(delays))
    assert b.attempt == 10
    b.reset()
    assert b.attempt == 0
    assert b.next_delay() <= 0.5
    with pytest.raises(ValueError):
        Backoff(0, 1)
