"""One RS-485 bus as a Modbus RTU master: pymodbus's async serial client, shared by its slaves.

This module is the one place where pymodbus is used and where its
exceptions and error responses become ``SensorError``s:

- no reply within the caller's timeout → ``SensorTimeout``, or, when bytes
  did arrive but pymodbus found no reply in them, ``ModbusBadCrc``/``BadFrame``
  (``rtu.diagnose`` says which);
- an exception response → ``ModbusExceptionReply`` naming the code;
- the port failing (unplugged, EOF, IO error) or refusing to open → ``LinkLost``.

A slave that answers after its timeout puts a stray reply on the bus, often
just ahead of the next slave's reply. pymodbus 3.16.1's RTU framer drops a
frame from the wrong slave together with everything buffered behind it,
which would cost the next slave its reply too; so stray frames are taken off
the front of the receive buffer here (through pymodbus's ``trace_packet``
hook, which may rewrite received data) and reported to ``on_stray``.

A bus is half-duplex: callers take turns on it, in the order they asked for
it (``asyncio.Lock`` is FIFO). A request made outside a turn is a turn of
its own; ``async with link.turn():`` holds the bus for several requests of
one caller, so the register blocks of one reading go out back to back. A
caller ends its turn after an attempt that failed, so its retries queue
behind the other slaves and a silent slave holds the bus for at most one of
its timeouts at a time.

pymodbus's own retries and reconnects are off (``retries=0``,
``reconnect_delay=0``): each slave has its own timeout and retry budget,
and the source reopens the port with the gateway's back-off, following a
``/dev/serial/by-id`` symlink to whatever device it points at now.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import termios
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Self

from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType

from gateway.drivers.base import Exchange
from gateway.drivers.modbus.rtu import (
    BadFrame,
    ModbusExceptionReply,
    diagnose,
    hex_frame,
    is_frame,
    read_request,
    reply_size,
    write_request,
)
from gateway.errors import ProtocolError, SensorError, SensorTimeout

__all__ = ["LinkLost", "ModbusLink"]

logger = logging.getLogger(__name__)

_OPEN_TIMEOUT_S = 2.0
# pymodbus's own reply timeout; ours (per request) fires first.
_CLIENT_TIMEOUT_S = 3600.0


class LinkLost(SensorError):
    """The bus's port is gone or cannot be opened; the source reopens it after a back-off."""


class ModbusLink:
    """An open bus. ``async with ModbusLink(port, ...) as link: await link.read(...)``.

    Args:
        port: device path or pyserial URL (``/dev/serial/by-id/...``).
        baudrate, parity, stopbits: the bus's serial settings (8 data bits).
        name: who owns the bus, for error messages.
        on_stray: called with (slave, frame) for a well-formed reply that came
            when another request was waiting (a late reply).
    """

    def __init__(
        self,
        port: str,
        *,
        baudrate: int,
        parity: str = "N",
        stopbits: int = 1,
        name: str = "",
        on_stray: Callable[[int, bytes], None] | None = None,
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.parity = parity
        self.stopbits = stopbits
        self.name = name or f"modbus[{port}]"
        self._client: AsyncModbusSerialClient | None = None
        self._lock = asyncio.Lock()
        self._holder: asyncio.Task[Any] | None = None  # the task whose turn it is
        self._lost: asyncio.Future[str] | None = None
        self._sent = b""
        self._received: list[bytes] = []
        self._last_buffer = b""
        self._expect = (0, 0)  # (slave, function) of the request under way
        self._on_stray = on_stray
        self.last: Exchange | None = None
        """The last request's frame and what came back, in hex, for ``gateway probe``."""

    @property
    def settings(self) -> str:
        """``9600 8N1``."""
        return f"{self.baudrate} 8{self.parity}{self.stopbits}"

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._client is not None:
            raise RuntimeError("a ModbusLink cannot be reopened; make a new one")
        self._lost = asyncio.get_running_loop().create_future()
        client = AsyncModbusSerialClient(
            self.port,
            framer=FramerType.RTU,
            baudrate=self.baudrate,
            bytesize=8,
            parity=self.parity,
            stopbits=self.stopbits,
            timeout=_OPEN_TIMEOUT_S,
            retries=0,
            reconnect_delay=0,
            name=self.name,
            trace_packet=self._trace_packet,
            trace_connect=self._trace_connect,
        )
        self._client = client
        failure = ""
        try:
            opened = await client.connect()
        except (ModbusException, OSError, ValueError, termios.error) as exc:
            # termios.error: settings the device refuses (a pty refuses a change once
            # parity is on). pymodbus then drops a pyserial handle that is already
            # open and holds the port's lock, in a reference cycle with the error's
            # traceback: once out of this handler, collect it, or every later open
            # of the port is refused as busy.
            failure = f"cannot open {self.port}: {exc}"
        if failure:
            client.close()
            gc.collect()
            raise LinkLost(self.name, failure)
        if not opened:
            client.close()
            raise LinkLost(self.name, f"cannot open {self.port} (missing, busy or not a tty)")
        # pymodbus times a reply out at this; each request's own, shorter timeout fires first.
        client.comm_params.timeout_connect = _CLIENT_TIMEOUT_S
        logger.info("%s: opened %s at %s", self.name, self.port, self.settings)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the port; safe to call twice."""
        if self._client is not None:
            self._client.close()
        if self._lost is not None and not self._lost.done():
            self._lost.set_result("closed")

    async def wait_lost(self) -> str:
        """Wait until the port fails or is closed; the reason."""
        assert self._lost is not None, "not open"
        return await asyncio.shield(self._lost)

    # -- turns on the bus ---------------------------------------------------------

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold the bus for the requests this task makes inside; others wait their turn."""
        task = asyncio.current_task()
        if task is None or self._holder is task:
            raise RuntimeError("a turn on the bus needs a task and cannot be nested")
        async with self._lock:
            self._holder = task
            try:
                yield
            finally:
                self._holder = None

    # -- requests ---------------------------------------------------------------

    async def read(
        self,
        slave: int,
        function: int,
        address: int,
        count: int,
        *,
        timeout_s: float,
        sensor: str,
    ) -> list[int]:
        """The ``count`` register words at ``address`` (function 3 or 4) of ``slave``.

        Raises:
            SensorTimeout, ModbusBadCrc, BadFrame, ModbusExceptionReply, LinkLost.
        """
        client = self._open_client()
        if function == 3:
            call: Callable[[], Awaitable[Any]] = lambda: client.read_holding_registers(  # noqa: E731
                address, count=count, device_id=slave
            )
        elif function == 4:
            call = lambda: client.read_input_registers(address, count=count, device_id=slave)  # noqa: E731
        else:
            raise ValueError(f"function {function} is not a register read")
        frame = read_request(slave, function, address, count)
        reply = await self._request(call, frame, slave, function, timeout_s, sensor)
        registers = getattr(reply, "registers", None)
        if not isinstance(registers, list) or len(registers) != count:
            got = len(registers) if isinstance(registers, list) else "no"
            raise BadFrame(sensor, f"{got} register(s) in reply to a read of {count}")
        return [int(r) for r in registers]

    async def write(
        self,
        slave: int,
        function: int,
        address: int,
        values: Sequence[int],
        *,
        timeout_s: float,
        sensor: str,
    ) -> None:
        """Write ``values`` at ``address`` with function 6 (one word) or 16.

        Raises:
            SensorTimeout, ModbusBadCrc, BadFrame, ModbusExceptionReply, LinkLost.
        """
        client = self._open_client()
        if function == 6:
            call: Callable[[], Awaitable[Any]] = lambda: client.write_register(  # noqa: E731
                address, values[0], device_id=slave
            )
        elif function == 16:
            call = lambda: client.write_registers(address, list(values), device_id=slave)  # noqa: E731
        else:
            raise ValueError(f"function {function} is not a register write")
        frame = write_request(slave, function, address, values)
        await self._request(call, frame, slave, function, timeout_s, sensor)

    def _open_client(self) -> AsyncModbusSerialClient:
        if self._client is None or self._lost is None:
            raise RuntimeError("the link is not open")
        if self._lost.done():
            raise LinkLost(self.name, f"{self.port} is {self._lost.result()}")
        return self._client

    async def _request(
        self,
        call: Callable[[], Awaitable[Any]],
        frame: bytes,
        slave: int,
        function: int,
        timeout_s: float,
        sensor: str,
    ) -> Any:
        if self._holder is not None and self._holder is asyncio.current_task():
            return await self._exchange(call, frame, slave, function, timeout_s, sensor)
        async with self._lock:
            return await self._exchange(call, frame, slave, function, timeout_s, sensor)

    async def _exchange(
        self,
        call: Callable[[], Awaitable[Any]],
        frame: bytes,
        slave: int,
        function: int,
        timeout_s: float,
        sensor: str,
    ) -> Any:
        """One attempt of one request; the caller holds the bus."""
        lost = self._lost
        assert lost is not None
        if lost.done():
            raise LinkLost(self.name, f"{self.port} is {lost.result()}")
        self._sent, self._received, self._last_buffer = b"", [], b""
        self._expect = (slave, function)
        try:
            task = asyncio.ensure_future(call())
        except ModbusException as exc:
            raise self._translate(exc, sensor) from exc
        try:
            done, _ = await asyncio.wait(
                {task, lost}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        received = b"".join(self._received)
        self.last = Exchange(
            hex_frame(self._sent or frame), hex_frame(received) if received else ""
        )
        if task in done:
            try:
                reply = task.result()
            except ModbusException as exc:
                raise self._translate(exc, sensor) from exc
            return self._check(reply, slave, function, sensor)
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not warn about it
        if lost.done():
            raise LinkLost(self.name, f"{self.port} is {lost.result()}")
        if received:
            raise diagnose(received, slave=slave, function=function, sensor=sensor)
        raise SensorTimeout(
            sensor,
            f"no reply from slave {slave} on {self.port} within {timeout_s:g} s to "
            f"{hex_frame(frame)}",
        )

    def _check(self, reply: Any, slave: int, function: int, sensor: str) -> Any:
        if reply is None or not hasattr(reply, "function_code"):
            raise BadFrame(sensor, f"no reply object from pymodbus ({reply!r})")
        code = int(reply.function_code)
        if code == function | 0x80:
            raise ModbusExceptionReply(sensor, function, int(getattr(reply, "exception_code", 0)))
        if code != function:
            raise BadFrame(sensor, f"reply for function {code}, expected {function}")
        if int(getattr(reply, "dev_id", slave)) != slave:
            raise BadFrame(sensor, f"reply from slave {reply.dev_id}, expected {slave}")
        return reply

    def _translate(self, exc: ModbusException, sensor: str) -> SensorError:
        """The one mapping from pymodbus exceptions to gateway errors."""
        if isinstance(exc, ConnectionException):
            self._mark_lost(f"disconnected ({exc})")
            return LinkLost(self.name, f"{self.port}: {exc}")
        if isinstance(exc, ModbusIOException) and "No response" in str(exc):
            return SensorTimeout(sensor, f"no reply on {self.port}: {exc}")
        return ProtocolError(sensor, f"bad reply on {self.port}: {exc}")

    # -- pymodbus callbacks ---------------------------------------------------------

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if sending:
            self._sent = bytes(data)
        else:
            # pymodbus passes its whole receive buffer each time; keep only what is new.
            if self._last_buffer and data.startswith(self._last_buffer):
                self._received.append(bytes(data[len(self._last_buffer) :]))
            else:
                self._received.append(bytes(data))
            self._last_buffer = bytes(data)
            data = self._skip_strays(data)
        return data

    def _skip_strays(self, data: bytes) -> bytes:
        slave, function = self._expect
        while (size := reply_size(data)) is not None and len(data) >= size:
            frame = data[:size]
            if not is_frame(frame) or (frame[0], frame[1] & 0x7F) == (slave, function):
                break
            logger.debug("%s: stray reply %s", self.name, hex_frame(frame))
            if self._on_stray is not None:
                self._on_stray(frame[0], frame)
            data = data[size:]
        return data

    def _trace_connect(self, connected: bool) -> None:
        if not connected:
            self._mark_lost("disconnected (unplugged?)")

    def _mark_lost(self, why: str) -> None:
        if self._lost is not None and not self._lost.done():
            logger.warning("%s: %s %s", self.name, self.port, why)
            self._lost.set_result(why)
