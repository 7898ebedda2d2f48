"""RTU frames: golden vectors from the Supmea manual (sensor-protocols §2.2) and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.drivers.modbus.rtu import (
    BadFrame,
    ModbusBadCrc,
    ModbusExceptionReply,
    crc16,
    diagnose,
    hex_frame,
    parse_read_reply,
    read_reply,
    read_request,
    with_crc,
    write_request,
)
from gateway.errors import ProtocolError


def frame(text: str) -> bytes:
    return bytes.fromhex(text)


@pytest.mark.parametrize(
    ("built", "golden"),
    [
        (read_request(1, 3, 0, 3), "01 03 00 00 00 03 05 CB"),
        (read_request(0, 3, 0, 3), "00 03 00 00 00 03 04 1A"),
        (write_request(1, 6, 7, [0x000D]), "01 06 00 07 00 0D F9 CE"),
        (read_reply(1, 3, [0x00FA, 0x02BC, 0x0006]), "01 03 06 00 FA 02 BC 00 06 B9 3F"),
    ],
)
def test_golden_frames(built: bytes, golden: str) -> None:
    assert hex_frame(built) == golden


def test_crc_is_sent_low_byte_first() -> None:
    body = frame("01 03 00 00 00 03")
    assert crc16(body) == 0xCB05
    assert with_crc(body)[-2:] == b"\x05\xcb"


def test_write_multiple_request_layout() -> None:
    built = write_request(2, 16, 0x0240, [1, 2])
    assert built[:7] == frame("02 10 02 40 00 02 04")
    assert built[7:11] == frame("00 01 00 02")
    assert crc16(built[:-2]) == int.from_bytes(built[-2:], "little")


def test_parse_a_good_reply() -> None:
    reply = frame("01 03 06 00 FA 02 BC 00 06 B9 3F")
    assert parse_read_reply(reply, slave=1, function=3, count=3) == [250, 700, 6]


def test_exception_reply_names_the_code() -> None:
    reply = with_crc(frame("02 83 02"))
    with pytest.raises(ModbusExceptionReply) as info:
        parse_read_reply(reply, slave=2, function=3, count=1, sensor="s2")
    assert info.value.code == 2
    assert info.value.reason == "exception-illegal-address"
    assert "exception 2 (illegal-address)" in info.value.problem
    assert info.value.sensor == "s2"


@pytest.mark.parametrize(
    ("reply", "error", "words"),
    [
        ("01 03 06 00 FA 02 BC 00 06 B9 3E", ModbusBadCrc, "CRC mismatch"),
        ("01 03", BadFrame, "too short"),
    ],
)
def test_bad_replies(reply: str, error: type[ProtocolError], words: str) -> None:
    with pytest.raises(error, match=words):
        parse_read_reply(frame(reply), slave=1, function=3, count=3)


def test_replies_from_the_wrong_slave_function_or_length() -> None:
    with pytest.raises(BadFrame, match="from slave 2"):
        parse_read_reply(read_reply(2, 3, [1, 2, 3]), slave=1, function=3, count=3)
    with pytest.raises(BadFrame, match="for function 4"):
        parse_read_reply(read_reply(1, 4, [1, 2, 3]), slave=1, function=3, count=3)
    with pytest.raises(BadFrame, match="to a read of 3"):
        parse_read_reply(read_reply(1, 3, [1, 2]), slave=1, function=3, count=3)


def test_diagnose_tells_crc_from_noise() -> None:
    good = read_reply(1, 3, [1, 2, 3])
    assert isinstance(diagnose(good[:-1] + b"\x00", slave=1, function=3), ModbusBadCrc)
    assert isinstance(diagnose(frame("83 11 FE 00 01 02"), slave=1, function=3), BadFrame)
    cut = diagnose(good[:6], slave=1, function=3)
    assert isinstance(cut, BadFrame)
    assert "cut short" in cut.problem
    bad_exc = diagnose(frame("01 83 02 00 00"), slave=1, function=3)
    assert isinstance(bad_exc, ModbusBadCrc)


@given(
    raw=st.binary(max_size=300),
    slave=st.integers(1, 247),
    function=st.sampled_from([3, 4]),
    count=st.integers(1, 125),
)
def test_arbitrary_bytes_are_a_reply_or_one_named_rejection(
    raw: bytes, slave: int, function: int, count: int
) -> None:
    problem = ""
    try:
        words = parse_read_reply(raw, slave=slave, function=function, count=count)
    except (ModbusBadCrc, BadFrame, ModbusExceptionReply) as exc:
        problem = exc.problem
    else:
        assert len(words) == count and all(0 <= w <= 0xFFFF for w in words)
        assert read_reply(slave, function, words) == raw
        problem = "accepted"
    assert problem
    diagnosis = diagnose(raw, slave=slave, function=function)
    assert isinstance(diagnosis, ModbusBadCrc | BadFrame) and diagnosis.problem


@given(words=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=125), slave=st.integers(1, 247))
def test_replies_round_trip(words: list[int], slave: int) -> None:
    assert (
        parse_read_reply(read_reply(slave, 4, words), slave=slave, function=4, count=len(words))
        == words
    )
