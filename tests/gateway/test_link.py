"""The shared link code of the serial drivers: snippets, escaping, recording, drain, cadence."""

from __future__ import annotations

import asyncio
import tomllib

import pytest

from gateway.drivers.base import Exchange
from gateway.drivers.link.cadence import advance, next_slot
from gateway.drivers.link.display import escape
from gateway.drivers.link.drain import drain
from gateway.drivers.link.record import Transcript
from gateway.drivers.link.snippet import sensor_snippet, toml_string
from gateway.errors import ProtocolError, SensorTimeout


@pytest.mark.parametrize(
    "port",
    [
        '/dev/serial/by-id/usb-"odd"-port',
        "C:\\ports\\COM3",
        "/dev/tty\tUSB0",
        "/dev/\x7fx",
        "/dev/µ",
    ],
)
def test_a_snippet_is_valid_toml_whatever_the_port_is_called(port: str) -> None:
    text = sensor_snippet(
        ("id", "modbus-3"),
        ("port", port),
        ("profile", "/etc/riverseal/profiles/FILL-IN.toml", "write one"),
        ("quantities", [["ph", "pH"], ["temperature", "Cel"]], "name each value"),
        ("slave", 3),
        ("interval_s", 10.0),
    )
    (table,) = tomllib.loads(text)["sensor"]
    assert table == {
        "id": "modbus-3",
        "port": port,
        "profile": "/etc/riverseal/profiles/FILL-IN.toml",
        "quantities": [["ph", "pH"], ["temperature", "Cel"]],
        "slave": 3,
        "interval_s": 10.0,
    }
    assert "# write one" in text and "quantities = [  # name each value" in text


def test_toml_string_escapes_quotes_backslashes_and_control_characters() -> None:
    assert toml_string('a"b\\c\nd\x00') == '"a\\"b\\\\c\\nd\\u0000"'


def test_escape_shows_wire_bytes_one_way() -> None:
    assert escape(b"7.02\r\n") == "7.02\\r\\n"
    assert escape(b"a\\b\xb0\x00") == "a\\\\b\\xb0\\x00"
    assert escape("25 °C\n".encode(), utf8=True) == "25 °C\\n"
    assert escape(b"ok\xff", utf8=True) == "ok\\xff"


def test_a_transcript_keeps_turns_with_their_lines_and_notes() -> None:
    t = Transcript()
    t.receive("*RS\\r")  # before any command: a turn with nothing sent
    t.send("i")
    t.receive("?I,pH,2.16\\r")
    t.receive("*OK\\r")
    t.annotate("slow")
    t.add("R", "", "timeout")
    assert t.exchanges == (
        Exchange("", "*RS\\r"),
        Exchange("i", "?I,pH,2.16\\r*OK\\r", "slow"),
        Exchange("R", "", "timeout"),
    )


class _Lines:
    def __init__(self, *lines: bytes | Exception) -> None:
        self.lines = list(lines)

    async def readline(self, timeout: float) -> bytes:
        if not self.lines:
            raise SensorTimeout("x", "quiet")
        item = self.lines.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


async def test_drain_drops_lines_and_noise_until_quiet() -> None:
    link = _Lines(b"*RS", ProtocolError("x", "noise"), b"*RE")
    dropped: list[bytes] = []
    await drain(link, quiet_s=0.01, within_s=1.0, dropped=dropped.append)
    assert dropped == [b"*RS", b"*RE"] and not link.lines


async def test_drain_gives_up_when_its_time_is_up() -> None:
    class Babbling:
        async def readline(self, timeout: float) -> bytes:
            await asyncio.sleep(0.005)
            return b"babble"

    loop = asyncio.get_running_loop()
    start = loop.time()
    await drain(Babbling(), quiet_s=0.05, within_s=0.1)
    assert loop.time() - start < 0.5


def test_cadence_skips_missed_slots_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    assert next_slot(0.0, 1.0, 0.5) == 1.0
    assert next_slot(0.0, 1.0, 2.5) == 3.0
    assert advance(0.0, 1.0, 0.5, who="ph-1", what="poll") == 1.0
    assert not caplog.records
    assert advance(0.0, 1.0, 2.5, who="ph-1", what="poll") == 3.0
    assert "ph-1: a poll overran its interval; skipped slot(s)" in caplog.text
