"""Arbitrary bytes into the EZO reply parsers and the running driver.

The pure layer (``interpret``) is fuzzed hard; the driver is fed arbitrary
replies over a real pty with fewer examples, checking that no exception
escapes it and that every line it could not use was counted with a reason.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import os
import tty
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.backoff import Backoff
from gateway.config import EzoSensorConfig
from gateway.drivers.ezo.config import EZO_OUTPUTS
from gateway.drivers.ezo.protocol import (
    MEASURING_RANGES,
    QueryReply,
    ReadingLine,
    Rejected,
    StatusLine,
    interpret,
    parse_outputs,
    parse_scale,
)
from gateway.drivers.ezo.source import EzoSource
from gateway.errors import ProtocolError
from gateway.pipeline import Event, Gap, Reading

CIRCUITS = ["ph", "orp", "rtd", "do", "ec"]


class CountingSink:
    """A Sink for one fuzz example (the ``sink`` fixture is per test, not per example)."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.rejects: collections.Counter[str] = collections.Counter()

    async def submit(self, reading: Reading) -> bool:
        self.readings.append(reading)
        return True

    async def submit_gap(self, gap: Gap) -> None:
        raise AssertionError(f"no gap expected in poll mode: {gap}")

    async def submit_event(self, event: Event) -> None:
        return None

    def reject(self, sensor: str, reason: str, detail: str) -> None:
        assert sensor == "ph-1" and reason and detail
        self.rejects[reason] += 1

    def counted(self) -> int:
        return sum(n for r, n in self.rejects.items() if r not in ("timeout", "no-reading"))


lines = st.binary(max_size=300)
protocolish = st.text(alphabet="0123456789.,-+eE?*OKIRSUVnoutp \x00\xff", max_size=40).map(
    lambda t: t.encode("latin-1")
)


@given(
    line=st.one_of(lines, protocolish),
    circuit=st.sampled_from(CIRCUITS),
    outputs=st.lists(st.sampled_from(["EC", "TDS", "S", "SG", "mg", "%"]), unique=True),
)
@settings(max_examples=500)
def test_interpret_never_raises_and_rejects_with_a_reason(
    line: bytes, circuit: str, outputs: list[str]
) -> None:
    fields = [o for o in outputs if o in EZO_OUTPUTS.get(circuit, ())]
    result = interpret(line, circuit, fields, sensor="s-1")
    assert isinstance(result, ReadingLine | StatusLine | QueryReply | Rejected)
    if isinstance(result, Rejected):
        assert result.reason in {"garbage", "bad-reading", "out-of-range"}
        assert result.detail
    if isinstance(result, ReadingLine):
        for v in result.values:
            low, high = MEASURING_RANGES[v.quantity]
            assert math.isfinite(v.value) and low <= v.value <= high


@given(st.text(max_size=60))
def test_outputs_and_scale_parsers_raise_only_protocol_errors(text: str) -> None:
    with contextlib.suppress(ProtocolError):
        parse_outputs("ec", text)
    with contextlib.suppress(ProtocolError):
        parse_scale(text)


def _expected_rejects(reply: bytes) -> int:
    """Lines of ``reply`` the driver cannot use, by the pure layer's verdict."""
    count = 0
    readings = 0
    for line in reply.replace(b"\n", b"\r").split(b"\r"):
        if not line:
            continue
        if len(line) > 256:
            count += 1
            continue
        result = interpret(line, "ph", (), sensor="ph-1")
        if isinstance(result, Rejected):
            count += 1
        elif isinstance(result, ReadingLine):
            readings += 1
    return count + max(0, readings - 1)  # all but the last reading are "extra-line"


@given(
    st.lists(st.one_of(lines, protocolish), min_size=1, max_size=4).map(
        # Control lines (*RS, *ER, ?...) steer the driver; their handling is tested
        # elsewhere. Here: everything else, in any shape.
        lambda parts: b"\r".join(
            p
            for p in b"\r".join(parts).replace(b"\n", b"\r").split(b"\r")
            if not p.lstrip().startswith((b"*", b"?"))
        )
    )
)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_driver_counts_every_unusable_line_and_keeps_running(tmp_path: Path, reply: bytes) -> None:
    asyncio.run(_drive(tmp_path, reply))


async def _drive(tmp_path: Path, reply: bytes) -> None:
    """One poll answered with ``reply`` then ``*OK``, over a real pty."""
    master, slave = os.openpty()
    tty.setraw(slave)
    link = tmp_path / "ezo"
    link.unlink(missing_ok=True)
    link.symlink_to(os.ttyname(slave))
    os.set_blocking(master, False)
    loop = asyncio.get_running_loop()
    buffer = bytearray()
    answered = asyncio.Event()

    def on_readable() -> None:
        try:
            data = os.read(master, 1024)
        except OSError:
            return
        buffer.extend(data)
        while b"\r" in buffer:
            command, _, rest = bytes(buffer).partition(b"\r")
            buffer[:] = rest
            name = command.decode("ascii", "replace").upper()
            if name == "I":
                os.write(master, b"?I,pH,2.16\r*OK\r")
            elif name == "R" and not answered.is_set():
                os.write(master, reply + b"\r*OK\r")
                answered.set()
            elif name != "R":
                os.write(master, b"*OK\r")

    loop.add_reader(master, on_readable)
    sink = CountingSink()
    cfg = EzoSensorConfig(id="ph-1", port=str(link), circuit="ph", interval_s=0.05, timeout_s=0.3)
    task = asyncio.create_task(EzoSource(cfg, backoff=Backoff(0.01, 0.02)).run(sink))
    try:
        await answered.wait()
        expected = _expected_rejects(reply)
        # The poll ends with a reading, or with "no-reading" when nothing usable came.
        async with asyncio.timeout(3):
            while not (
                sink.counted() >= expected and (sink.readings or sink.rejects["no-reading"])
            ):
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert not task.done()
        assert sink.counted() == expected, (reply, sink.rejects)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        loop.remove_reader(master)
        os.close(master)
        os.close(slave)
