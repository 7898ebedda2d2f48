"""The base of every simulated serial device: a real pty pair, its symlink, reader and writer.

The client (a gateway driver, a test) opens `device_path` — or the stable
`link_path` symlink, which plays the part of `/dev/serial/by-id/...` — with
pyserial exactly as it would open a USB adapter. The simulator side reads and
writes the pty master from the event loop.

Two layers:

- `PtyLink` owns the pair: it opens it raw, names it (and repoints the
  symlink), feeds every byte the client writes to a handler, writes the
  handler's `Reply` lines back after their delays, and closes it on unplug or
  exit (the symlink goes too).
- `PtyDevice` is the async context manager a protocol simulator subclasses:
  it owns one `PtyLink`, whose handler is the subclass's `on_data`, plus the
  background loops the protocol needs while the port is open (an EZO circuit's
  continuous output, an SDI-12 sonde's service requests), and `unplug` and
  `replug` with per-protocol hooks. The EZO (`simulators.ezo_pty`), SDI-12
  (`simulators.sdi12`) and Modbus (`simulators.modbus`) devices are built on it.

We keep our own fd on the slave open for the pair's lifetime: without it the
master reports hang-up (and `read` fails with EIO) whenever no client has the
port open, which would spin the event loop's reader; with it, output written
while nobody listens simply waits in the tty buffer, as unread serial input
does, until the client flushes it (pyserial does on open).

A pty carries the client's line settings but does not enforce them
(sensor-protocols §10.1); `PtyLink.client_baudrate` reads the speed the client
set, so a device can misbehave as a UART at the wrong rate would.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import pty
import termios
import tty
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = ["Loop", "PtyDevice", "PtyLink", "Reply", "ReplyHandler", "open_raw_pty"]

log = logging.getLogger(__name__)

_READ_SIZE = 4096
_READ_RETRY_S = 0.05  # back-off after EIO/EOF on the master
_SPEEDS = {
    getattr(termios, f"B{rate}"): rate
    for rate in (300, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
}


@dataclass(frozen=True)
class Reply:
    """One line to write to the host `delay_s` seconds after the previous one."""

    delay_s: float
    data: bytes


ReplyHandler = Callable[[bytes], Iterable[Reply]]


def open_raw_pty(baudrate: int | None = None) -> tuple[int, int, str]:
    """A new pty pair in raw mode: (master fd, non-blocking; slave fd; slave path).

    Raw mode also turns echo off: a CR must arrive as a CR. `baudrate`, when
    given, is the line speed the pair starts at, until a client sets its own.
    """
    if baudrate is not None and baudrate not in _SPEEDS.values():
        raise ValueError(f"unsupported baud rate {baudrate}")
    master, slave = pty.openpty()
    try:
        tty.setraw(slave)
        if baudrate is not None:
            attrs = termios.tcgetattr(slave)
            attrs[4] = attrs[5] = getattr(termios, f"B{baudrate}")
            termios.tcsetattr(slave, termios.TCSANOW, attrs)
        os.set_blocking(master, False)
        return master, slave, os.ttyname(slave)
    except BaseException:
        os.close(master)
        os.close(slave)
        raise


class _State(enum.Enum):
    NEW = "new"
    PLUGGED = "plugged"
    UNPLUGGED = "unplugged"
    CLOSED = "closed"


class PtyLink:
    """A pty pair driven by `handler`: bytes in, `Reply` lines out after their delays.

    `baudrate`, when given, is the line speed each new pair starts at (a
    client's own setting replaces it; `client_baudrate` reads it back).

    Replies, whether returned by the handler or passed to `write`, go out in the
    order they were produced, each `delay_s` after the previous one. Replies
    still pending when the link is unplugged are lost, as on a real cable.
    """

    def __init__(
        self, handler: ReplyHandler, link_path: Path | None = None, *, baudrate: int | None = None
    ) -> None:
        if baudrate is not None and baudrate not in _SPEEDS.values():
            raise ValueError(f"unsupported baud rate {baudrate}")
        self._handler = handler
        self._link_path = link_path
        self._baudrate = baudrate
        self._state = _State.NEW
        self._master = -1
        self._slave = -1
        self._device_path = ""
        self._generation = 0  # bumped on unplug so queued replies for the old pair are dropped
        self._queue: asyncio.Queue[tuple[int, Reply]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._retry: asyncio.TimerHandle | None = None

    @property
    def device_path(self) -> str:
        """The slave tty (e.g. `/dev/pts/7`) of the current pair."""
        if self._state is not _State.PLUGGED:
            raise RuntimeError(f"link is {self._state.value}, it has no device")
        return self._device_path

    @property
    def link_path(self) -> Path | None:
        return self._link_path

    @property
    def plugged(self) -> bool:
        return self._state is _State.PLUGGED

    def client_baudrate(self) -> int | None:
        """The line speed the client last set on its end, or None if unknown."""
        if self._state is not _State.PLUGGED:
            return None
        try:
            speed = termios.tcgetattr(self._master)[5]
        except termios.error:
            return None
        return _SPEEDS.get(speed)

    def write(self, replies: Iterable[Reply]) -> None:
        """Queue unsolicited output behind any replies still pending."""
        if self._state is _State.PLUGGED:
            for reply in replies:
                self._queue.put_nowait((self._generation, reply))

    async def __aenter__(self) -> Self:
        if self._state is not _State.NEW:
            raise RuntimeError("a PtyLink cannot be reopened")
        self._plug()
        name = self._link_path or self._device_path
        self._writer = asyncio.get_running_loop().create_task(
            self._write_loop(), name=f"pty[{name}].writer"
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state is _State.PLUGGED:
            self._unplug()
        self._state = _State.CLOSED
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

    async def unplug(self) -> None:
        """Close the pair and remove the symlink: a client sees EOF or an error."""
        if self._state is not _State.PLUGGED:
            raise RuntimeError(f"cannot unplug a link that is {self._state.value}")
        self._unplug()

    async def replug(self) -> None:
        """Open a new pair (usually a new /dev/pts number) and repoint the symlink."""
        if self._state is not _State.UNPLUGGED:
            raise RuntimeError(f"cannot replug a link that is {self._state.value}")
        self._plug()

    # -- pair lifecycle --------------------------------------------------------

    def _check_link_path(self) -> None:
        path = self._link_path
        if path is not None and path.exists() and not path.is_symlink():
            raise FileExistsError(f"{path} exists and is not a symlink; refusing to replace it")

    def _plug(self) -> None:
        self._check_link_path()
        # Until a client sets its own, the line runs at the device's rate.
        self._master, self._slave, self._device_path = open_raw_pty(self._baudrate)
        asyncio.get_running_loop().add_reader(self._master, self._on_readable)
        self._state = _State.PLUGGED
        if self._link_path is not None:
            # Build the new symlink aside and rename it over the old one, so a
            # client never sees the path missing while we repoint it.
            tmp = self._link_path.with_name(f".{self._link_path.name}.{os.getpid()}.tmp")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(self._device_path)
            tmp.replace(self._link_path)
        log.debug("plugged %s (link %s)", self._device_path, self._link_path)

    def _unplug(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._master)
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        os.close(self._master)
        os.close(self._slave)
        self._generation += 1
        self._state = _State.UNPLUGGED
        path = self._link_path
        if path is not None and path.is_symlink() and os.readlink(path) == self._device_path:
            path.unlink()
        log.debug("unplugged %s", self._device_path)

    # -- IO --------------------------------------------------------------------

    def _on_readable(self) -> None:
        try:
            data = os.read(self._master, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            # EIO means no process holds the slave; we hold it, so this is rare,
            # but it must not spin the loop: stop reading briefly and try again.
            log.debug("read on %s failed (%s); retrying", self._device_path, exc)
            data = b""
        if not data:
            self._pause_reader()
            return
        replies = self._handler(data)
        self.write(replies)

    def _pause_reader(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._master)
        generation = self._generation

        def resume() -> None:
            self._retry = None
            if self._state is _State.PLUGGED and self._generation == generation:
                loop.add_reader(self._master, self._on_readable)

        self._retry = loop.call_later(_READ_RETRY_S, resume)

    async def _write_loop(self) -> None:
        while True:
            generation, reply = await self._queue.get()
            if reply.delay_s > 0:
                await asyncio.sleep(reply.delay_s)
            if self._state is _State.PLUGGED and generation == self._generation:
                self._write_now(reply.data)

    def _write_now(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._master, view)
            except BlockingIOError:
                # The tty input buffer is full because nobody reads the port:
                # drop the rest, as a UART with no listener would.
                log.debug("%s: buffer full, dropped %d bytes", self._device_path, len(view))
                return
            except OSError as exc:
                log.debug(
                    "%s: write failed (%s), dropped %d bytes", self._device_path, exc, len(view)
                )
                return
            view = view[written:]


Loop = Callable[[], Coroutine[Any, Any, None]]
"""A background loop of a `PtyDevice`: a coroutine function run as a task while it is open."""


class PtyDevice:
    """A simulated device on a `PtyLink`: the async context manager every pty simulator is.

    A subclass implements `on_data` (the client's bytes in, `Reply` lines out)
    and overrides what its protocol needs of the hooks: `_open`/`_close`
    (resources around the port's lifetime, e.g. a server behind a bridge),
    `_started` (right after the port appears, e.g. a power-up notice),
    `_loops` (coroutines that run while the device is open, each a task
    cancelled on exit), `_unplugged` and `_replugged`. `write` sends
    unsolicited output behind any replies still pending.
    """

    def __init__(self, link_path: Path | None = None, *, baudrate: int | None = None) -> None:
        self._link = PtyLink(self.on_data, link_path, baudrate=baudrate)
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def link(self) -> PtyLink:
        return self._link

    @property
    def device_path(self) -> str:
        return self._link.device_path

    @property
    def link_path(self) -> Path | None:
        return self._link.link_path

    def on_data(self, data: bytes) -> Iterable[Reply]:
        """The bytes the client wrote; the replies to send, in order."""
        raise NotImplementedError

    def write(self, replies: Iterable[Reply]) -> None:
        self._link.write(replies)

    # -- hooks -----------------------------------------------------------------

    async def _open(self) -> None:
        """Before the port appears."""

    async def _close(self) -> None:
        """After the port is gone (also when opening failed, even within `_open`)."""

    def _started(self) -> None:
        """The port has just appeared."""

    def _loops(self) -> Mapping[str, Loop]:
        """Background loops by name, run while the device is open."""
        return {}

    def _unplugged(self) -> None:
        """The port has just gone away (`unplug`)."""

    def _replugged(self) -> None:
        """A new port has just appeared (`replug`)."""

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            await self._open()
            await self._link.__aenter__()
            self._started()
            name = self._link.link_path or self._link.device_path
            loop = asyncio.get_running_loop()
            for what, run in self._loops().items():
                self._tasks.append(
                    loop.create_task(run(), name=f"{type(self).__name__}[{name}].{what}")
                )
        except BaseException as exc:
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            tasks, self._tasks = self._tasks, []
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._link.__aexit__(exc_type, exc, tb)
        finally:
            await self._close()

    async def unplug(self) -> None:
        """Close the pair and remove the symlink: a client sees EOF or an error."""
        await self._link.unplug()
        self._unplugged()

    async def replug(self) -> None:
        """Open a new pair (usually a new /dev/pts number) and repoint the symlink."""
        await self._link.replug()
        self._replugged()
