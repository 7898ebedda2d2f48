"""Modbus RTU frames as bytes: CRC, requests, replies, and why a reply is bad.

pymodbus does the framing on the live bus (``link``). This pure
module is what the gateway itself knows about the wire: it builds the exact
frames for the record (``Reading.raw``, ``gateway probe``) and, when bytes
arrived but pymodbus found no reply in them, says what was wrong (a CRC
mismatch, a reply from another slave, noise), so the rejection names it.

CRC-16/MODBUS: initial 0xFFFF, reflected polynomial 0xA001, sent low byte first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

from gateway.errors import ProtocolError

__all__ = [
    "EXCEPTION_NAMES",
    "PARITIES",
    "BadFrame",
    "ModbusBadCrc",
    "ModbusExceptionReply",
    "Parity",
    "crc16",
    "diagnose",
    "exception_name",
    "hex_frame",
    "is_frame",
    "parse_read_reply",
    "read_reply",
    "read_request",
    "reply_size",
    "with_crc",
    "write_request",
]

Parity = Literal["N", "E", "O"]
"""Serial parity: none, even, odd."""
PARITIES: tuple[Parity, ...] = get_args(Parity)

EXCEPTION_NAMES = {
    1: "illegal-function",
    2: "illegal-address",
    3: "illegal-value",
    4: "device-failure",
    5: "acknowledge",
    6: "device-busy",
    7: "negative-acknowledge",
    8: "memory-parity-error",
    10: "gateway-path-unavailable",
    11: "gateway-no-response",
}
"""Modbus exception codes by their standard meaning, as stable reject labels."""

_LABEL = "modbus"  # sensor name in errors from the pure functions, which know no sensor id


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """CRC-16/MODBUS of ``data``; append it as ``crc.to_bytes(2, "little")``."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ byte) & 0xFF]
    return crc


def with_crc(body: bytes) -> bytes:
    return body + crc16(body).to_bytes(2, "little")


def hex_frame(frame: bytes) -> str:
    """``01 03 00 00 00 03 05 CB``: how frames are shown and recorded."""
    return frame.hex(" ").upper()


def exception_name(code: int) -> str:
    return EXCEPTION_NAMES.get(code, f"code-{code}")


class ModbusExceptionReply(ProtocolError):
    """The slave answered with a Modbus exception response."""

    def __init__(self, sensor: str, function: int, code: int) -> None:
        super().__init__(
            sensor, f"exception {code} ({exception_name(code)}) in reply to function {function}"
        )
        self.function = function
        self.code = code

    @property
    def reason(self) -> str:
        """The reject label, e.g. ``exception-illegal-address``."""
        return f"exception-{exception_name(self.code)}"


class ModbusBadCrc(ProtocolError):
    """A reply whose CRC does not match its bytes."""


class BadFrame(ProtocolError):
    """Bytes that are not a reply to the request: noise, wrong length, wrong slave or function."""


def read_request(slave: int, function: int, address: int, count: int) -> bytes:
    """A read request (function 3 or 4), CRC included."""
    return with_crc(
        bytes([slave, function]) + address.to_bytes(2, "big") + count.to_bytes(2, "big")
    )


def write_request(slave: int, function: int, address: int, values: Sequence[int]) -> bytes:
    """A write request: function 6 (one value) or 16, CRC included."""
    head = bytes([slave, function]) + address.to_bytes(2, "big")
    if function == 6:
        return with_crc(head + values[0].to_bytes(2, "big"))
    data = b"".join(v.to_bytes(2, "big") for v in values)
    return with_crc(head + len(values).to_bytes(2, "big") + bytes([len(data)]) + data)


def read_reply(slave: int, function: int, words: Sequence[int]) -> bytes:
    """The reply frame that carries ``words``, CRC included."""
    data = b"".join(w.to_bytes(2, "big") for w in words)
    return with_crc(bytes([slave, function, len(data)]) + data)


def reply_size(data: bytes) -> int | None:
    """Length of the reply frame that ``data`` starts with, or None until that is known."""
    if len(data) < 3:
        return None
    function = data[1]
    if function & 0x80:
        return 5
    if function in (1, 2, 3, 4):
        return 5 + data[2]
    if function in (5, 6, 15, 16):
        return 8
    return None


def is_frame(frame: bytes) -> bool:
    """Whether the CRC at the end of ``frame`` matches its bytes."""
    return len(frame) >= 4 and crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")


def parse_read_reply(
    frame: bytes, *, slave: int, function: int, count: int, sensor: str | None = None
) -> list[int]:
    """The register words of one complete reply to a read of ``count`` registers.

    Raises:
        ModbusExceptionReply: the slave answered with an exception.
        ModbusBadCrc: the frame's CRC does not match.
        BadFrame: anything else that is not this reply.
    """
    name = sensor or _LABEL
    if len(frame) < 5:
        raise BadFrame(name, f"{len(frame)} byte(s) is too short for a reply: {hex_frame(frame)}")
    if crc16(frame[:-2]) != int.from_bytes(frame[-2:], "little"):
        raise ModbusBadCrc(name, f"CRC mismatch in {hex_frame(frame)}")
    if frame[0] != slave:
        raise BadFrame(name, f"reply from slave {frame[0]}, expected {slave}: {hex_frame(frame)}")
    if frame[1] == function | 0x80 and len(frame) == 5:
        raise ModbusExceptionReply(name, function, frame[2])
    if frame[1] != function:
        raise BadFrame(
            name, f"reply for function {frame[1]}, expected {function}: {hex_frame(frame)}"
        )
    if frame[2] != 2 * count or len(frame) != 5 + 2 * count:
        raise BadFrame(
            name,
            f"reply of {len(frame)} bytes (byte count {frame[2]}) to a read of {count} "
            f"register(s): {hex_frame(frame)}",
        )
    body = frame[3:-2]
    return [int.from_bytes(body[i : i + 2], "big") for i in range(0, len(body), 2)]


def diagnose(
    received: bytes, *, slave: int, function: int, sensor: str | None = None
) -> ProtocolError:
    """Why bytes that arrived after a request are no reply to it.

    Returns ModbusBadCrc when they start like a reply from ``slave`` to
    ``function`` (or its exception) but the CRC fails, else BadFrame.
    """
    name = sensor or _LABEL
    shown = hex_frame(received[:64]) + (" ..." if len(received) > 64 else "")
    if len(received) >= 4 and received[0] == slave and received[1] in (function, function | 0x80):
        if received[1] == function | 0x80:
            size = 5
        else:
            size = 5 + received[2] if len(received) >= 3 else len(received)
        frame = received[:size]
        if len(frame) == size and crc16(frame[:-2]) != int.from_bytes(frame[-2:], "little"):
            return ModbusBadCrc(name, f"CRC mismatch in reply {shown}")
        if len(frame) < size:
            return BadFrame(name, f"reply cut short after {len(received)} byte(s): {shown}")
    return BadFrame(name, f"{len(received)} byte(s) that are no reply to the request: {shown}")
