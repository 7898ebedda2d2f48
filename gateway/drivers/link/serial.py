"""An asyncio line link over a serial port, for ASCII sensor protocols.

pyserial opens the port non-blocking (``timeout=0``); the event loop watches
its file descriptor and everything that arrives is split into lines at CR or
LF (empty lines are dropped). A line longer than ``max_line`` bytes is line
noise or a wrong baud rate: it is discarded and reported as a ProtocolError
in its place, so the caller can count it and keep reading.

This module is the one place where ``serial.SerialException``, ``OSError``
and ``termios.error`` from the port become ``SensorError``: nothing above it
sees a pyserial exception. A read error or a hang-up (a USB adapter that
was unplugged, a pty whose master closed) fails the link for good; the
driver closes it and opens the same path again, so a ``/dev/serial/by-id``
symlink that now points at a new device is followed. A zero-length read
alone is no hang-up: a non-blocking tty returns one whenever nothing is
waiting, e.g. when ``discard_input`` flushed the bytes that woke the reader.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import select
import termios
from types import TracebackType
from typing import Self

import serial

from gateway.errors import ProtocolError, SensorError, SensorTimeout

__all__ = ["MAX_LINE_BYTES", "SerialLink"]

logger = logging.getLogger(__name__)

MAX_LINE_BYTES = 256
_READ_SIZE = 4096
_TERMINATORS = b"\r\n"


def _translate(sensor: str, action: str, exc: BaseException) -> SensorError:
    """The single mapping from serial/OS errors to gateway errors."""
    return SensorError(sensor, f"{action}: {exc}")


class SerialLink:
    """One open serial port, read as lines.

    Args:
        path: device path or pyserial URL backed by a file descriptor
            (``/dev/serial/by-id/...``, ``/dev/ttyUSB0``, a pty).
        baudrate: line speed.
        sensor: sensor id, for error messages.
        max_line: longest line accepted, in bytes, without its terminator.
        max_pending_lines: lines kept while nobody reads; the oldest go first
            (with a warning) beyond this.
        write_timeout_s: a write that cannot complete within this raises
            SensorTimeout.
    """

    def __init__(
        self,
        path: str,
        baudrate: int,
        *,
        sensor: str,
        max_line: int = MAX_LINE_BYTES,
        max_pending_lines: int = 64,
        write_timeout_s: float = 2.0,
    ) -> None:
        self.path = path
        self.baudrate = baudrate
        self.sensor = sensor
        self._max_line = max_line
        self._max_pending = max_pending_lines
        self._write_timeout_s = write_timeout_s
        self._serial: serial.Serial | None = None
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._buffer = b""
        self._skipping = False  # inside an overlong line, waiting for its terminator
        self._items: collections.deque[bytes | ProtocolError] = collections.deque()
        self._ready = asyncio.Event()
        self._error: SensorError | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._serial is not None or self._closed:
            raise RuntimeError("a SerialLink cannot be reopened; make a new one")
        self._loop = asyncio.get_running_loop()
        try:
            port = serial.serial_for_url(
                self.path, baudrate=self.baudrate, timeout=0, write_timeout=0, exclusive=True
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise _translate(self.sensor, f"cannot open {self.path}", exc) from exc
        try:
            fd = port.fileno()
            os.set_blocking(fd, False)
        except (serial.SerialException, OSError, AttributeError) as exc:
            port.close()
            raise _translate(self.sensor, f"{self.path} has no pollable descriptor", exc) from exc
        self._serial = port
        self._fd = fd
        self._loop.add_reader(fd, self._on_readable)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop reading and close the port; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stop_reading()
        port, self._serial = self._serial, None
        self._fd = -1
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError, termios.error) as exc:
                logger.debug("closing %s: %s", self.path, exc)
        self._ready.set()

    @property
    def failed(self) -> SensorError | None:
        """Why the link failed for good (read error, hang-up), if it did."""
        return self._error

    # -- IO ----------------------------------------------------------------------

    async def readline(self, timeout: float) -> bytes:  # noqa: ASYNC109  # a per-call deadline is the API
        """The next line without its terminator.

        Raises:
            SensorTimeout: no line within ``timeout`` seconds.
            ProtocolError: the next line was overlong and has been discarded.
            SensorError: the link failed (unplugged, IO error) or is closed.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while True:
            if self._items:
                item = self._items.popleft()
                if isinstance(item, ProtocolError):
                    raise item
                return item
            if self._error is not None:
                raise self._error
            if self._closed:
                raise SensorError(self.sensor, f"{self.path} is closed")
            self._ready.clear()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._ready.wait()
            except TimeoutError:
                raise SensorTimeout(
                    self.sensor, f"no line from {self.path} within {timeout:.2f} s"
                ) from None

    async def write(self, data: bytes) -> None:
        """Write all of ``data``, waiting (up to the write timeout) if the port is full."""
        if self._error is not None:
            raise self._error
        if self._closed or self._loop is None:
            raise SensorError(self.sensor, f"{self.path} is not open")
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._fd, view)
            except BlockingIOError:
                await self._wait_writable()
                continue
            except OSError as exc:
                self._fail(_translate(self.sensor, f"write to {self.path} failed", exc))
                assert self._error is not None
                raise self._error from exc
            view = view[written:]

    def discard_input(self) -> None:
        """Drop everything received and not yet read, in the kernel and here."""
        if self._error is not None:
            raise self._error
        if self._serial is None:
            raise SensorError(self.sensor, f"{self.path} is not open")
        try:
            self._serial.reset_input_buffer()
        except (serial.SerialException, OSError, termios.error) as exc:
            self._fail(_translate(self.sensor, f"flushing {self.path} failed", exc))
            assert self._error is not None
            raise self._error from exc
        self._buffer = b""
        self._skipping = False
        self._items.clear()

    # -- internals -----------------------------------------------------------------

    async def _wait_writable(self) -> None:
        assert self._loop is not None
        ready = self._loop.create_future()
        fd = self._fd

        def on_writable() -> None:
            if not ready.done():
                ready.set_result(None)

        self._loop.add_writer(fd, on_writable)
        try:
            async with asyncio.timeout(self._write_timeout_s):
                await ready
        except TimeoutError:
            raise SensorTimeout(
                self.sensor, f"{self.path} took no data for {self._write_timeout_s:.1f} s"
            ) from None
        finally:
            self._loop.remove_writer(fd)

    def _on_readable(self) -> None:
        try:
            chunk = os.read(self._fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(_translate(self.sensor, f"read from {self.path} failed", exc))
            return
        if not chunk:
            if self._hung_up():
                self._fail(SensorError(self.sensor, f"end of file on {self.path} (unplugged?)"))
            # Else nothing was waiting: the bytes that made the port readable were
            # flushed (discard_input) before this callback ran. Not an unplug.
            return
        self._feed(chunk)

    def _hung_up(self) -> bool:
        """After a zero-length read: has the device gone, or was there just nothing to read?

        With ``timeout=0`` pyserial leaves a tty returning ``b""`` whenever no
        data waits. A tty that hung up (a USB adapter unplugged, a pty whose
        master closed) polls as POLLHUP or POLLERR and refuses terminal calls
        (EIO, so ``isatty`` is false); a descriptor that is no tty has reached
        its end of file.
        """
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        try:
            events = poller.poll(0)
        except OSError:
            return True
        if any(ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, ev in events):
            return True
        return not os.isatty(self._fd)

    def _feed(self, chunk: bytes) -> None:
        data = self._buffer + chunk
        start = 0
        for index, byte in enumerate(data):
            if byte not in _TERMINATORS:
                continue
            line = data[start:index]
            start = index + 1
            if self._skipping:
                self._skipping = False  # the tail of an overlong line, already reported
            elif len(line) > self._max_line:
                self._push(self._overlong())
            elif line:
                self._push(line)
        rest = data[start:]
        if self._skipping:
            rest = b""
        elif len(rest) > self._max_line:
            self._push(self._overlong())
            self._skipping = True
            rest = b""
        self._buffer = rest

    def _overlong(self) -> ProtocolError:
        return ProtocolError(
            self.sensor, f"line longer than {self._max_line} bytes from {self.path}; discarded"
        )

    def _push(self, item: bytes | ProtocolError) -> None:
        if len(self._items) >= self._max_pending:
            dropped = self._items.popleft()
            logger.warning(
                "%s: %d unread lines from %s; dropping the oldest (%r)",
                self.sensor,
                self._max_pending,
                self.path,
                dropped,
            )
        self._items.append(item)
        self._ready.set()

    def _fail(self, error: SensorError) -> None:
        if self._error is None:
            self._error = error
        self._stop_reading()
        self._ready.set()

    def _stop_reading(self) -> None:
        if self._loop is not None and self._fd >= 0:
            self._loop.remove_reader(self._fd)
