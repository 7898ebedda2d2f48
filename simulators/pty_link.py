"""Host a simulated serial device on a real pty pair.

The client (a gateway driver, a test) opens `device_path` — or the stable
`link_path` symlink, which plays the part of `/dev/serial/by-id/...` — with
pyserial exactly as it would open a USB adapter. The simulator side reads and
writes the pty master from the event loop.

We keep our own fd on the slave open for the pair's lifetime: without it the
master reports hang-up (and `read` fails with EIO) whenever no client has the
port open, which would spin the event loop's reader; with it, output written
while nobody listens simply waits in the tty buffer, as unread serial input
does, until the client flushes it (pyserial does on open).

A pty carries the client's line settings but does not enforce them
(sensor-protocols §10.1). `EzoPtyDevice` reads the speed the client set and,
when it is not the circuit's, garbles both directions as a UART at the wrong
rate would, so baud-rate scanning can be tested.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import os
import pty
import termios
import time
import tty
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from simulators.ezo import EzoCircuit, EzoKind, Reply
from simulators.river import RiverModel, WaterSource

__all__ = ["EzoPtyDevice", "PtyLink", "ReplyHandler"]

log = logging.getLogger(__name__)

ReplyHandler = Callable[[bytes], Iterable[Reply]]

_READ_SIZE = 4096
_READ_RETRY_S = 0.05  # back-off after EIO/EOF on the master
_IDLE_POLL_S = 0.05  # how often a device with continuous mode off looks again
_TRANSCRIPT_LINES = 1000  # commands and lines an EzoPtyDevice remembers
_SPEEDS = {
    getattr(termios, f"B{rate}"): rate
    for rate in (300, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
}


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
            self._write_loop(), name=f"pty_link[{name}].writer"
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
        master, slave = pty.openpty()
        tty.setraw(slave)  # raw mode also turns echo off: a CR must arrive as a CR
        if self._baudrate is not None:
            # Until a client sets its own, the line runs at the device's rate.
            attrs = termios.tcgetattr(slave)
            attrs[4] = attrs[5] = getattr(termios, f"B{self._baudrate}")
            termios.tcsetattr(slave, termios.TCSANOW, attrs)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self._device_path = os.ttyname(slave)
        asyncio.get_running_loop().add_reader(master, self._on_readable)
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


def _garble(data: bytes) -> bytes:
    """Bytes as received at the wrong baud rate: framing lost, no CR survives."""
    return bytes(b | 0x80 for b in data)


class EzoPtyDevice:
    """An `EzoCircuit` on a pty: powers up with `*RE`, streams continuous readings.

    `clock` gives the Unix time used to sample the river (tests pin it).
    `baudrate`: the circuit's UART rate; a client that opens the port at
    another rate sees garbage and is not understood. None: any rate works.
    `commands` and `served` keep the recent traffic (commands as text without
    CR; every line written, as bytes) so tests can compare with what a client got.
    """

    def __init__(
        self,
        circuit: EzoCircuit,
        link_path: Path | None = None,
        *,
        clock: Callable[[], float] = time.time,
        baudrate: int | None = None,
    ) -> None:
        self._circuit = circuit
        self._clock = clock
        self._baudrate = baudrate
        self._link = PtyLink(self._on_data, link_path, baudrate=baudrate)
        self._continuous: asyncio.Task[None] | None = None
        self._pending = bytearray()
        self.commands: collections.deque[str] = collections.deque(maxlen=_TRANSCRIPT_LINES)
        self.served: collections.deque[bytes] = collections.deque(maxlen=_TRANSCRIPT_LINES)

    @classmethod
    def for_river(
        cls,
        kind: EzoKind,
        link_path: Path | None,
        *,
        seed: int = 0,
        river: WaterSource | None = None,
        clock: Callable[[], float] = time.time,
        baudrate: int | None = 9600,
        **circuit_options: Any,
    ) -> EzoPtyDevice:
        """One circuit of `kind` reading `river` (default `RiverModel(seed)`) at `link_path`.

        `circuit_options` go to `EzoCircuit` (firmware, delay_scale, faults ...).
        This is the building block of a whole simulated station.
        """
        water = river if river is not None else RiverModel(seed)
        circuit = EzoCircuit(kind, water, seed=seed, **circuit_options)
        return cls(circuit, link_path, clock=clock, baudrate=baudrate)

    @property
    def circuit(self) -> EzoCircuit:
        return self._circuit

    @property
    def link(self) -> PtyLink:
        return self._link

    @property
    def device_path(self) -> str:
        return self._link.device_path

    @property
    def link_path(self) -> Path | None:
        return self._link.link_path

    async def __aenter__(self) -> Self:
        await self._link.__aenter__()
        self._link.write(self._out(self._circuit.power_up(self._clock())))
        self._continuous = asyncio.get_running_loop().create_task(
            self._continuous_loop(), name=f"ezo[{self._circuit.kind}].continuous"
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._continuous is not None:
            self._continuous.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._continuous
        await self._link.__aexit__(exc_type, exc, tb)

    async def unplug(self) -> None:
        await self._link.unplug()

    async def replug(self) -> None:
        """Replug: a new pty, and the circuit power-cycles (`*RE`, volatile state reset)."""
        await self._link.replug()
        self._pending.clear()
        self._link.write(self._out(self._circuit.power_up(self._clock())))

    def _mismatched(self) -> bool:
        if self._baudrate is None:
            return False
        client = self._link.client_baudrate()
        return client is not None and client != self._baudrate

    def _out(self, replies: Iterable[Reply]) -> list[Reply]:
        garble = self._mismatched()
        out = []
        for reply in replies:
            self.served.extend(reply.data.splitlines(keepends=True))
            out.append(Reply(reply.delay_s, _garble(reply.data)) if garble else reply)
        return out

    def _on_data(self, data: bytes) -> list[Reply]:
        if self._mismatched():
            data = _garble(data)
        self._pending += data
        *lines, rest = self._pending.split(b"\r")
        self._pending = bytearray(rest)
        self.commands.extend(line.decode("ascii", "replace").strip() for line in lines)
        return self._out(self._circuit.receive(data, self._clock()))

    async def _continuous_loop(self) -> None:
        while True:
            interval = self._circuit.continuous_interval
            if interval is None:
                await asyncio.sleep(_IDLE_POLL_S)
                continue
            await asyncio.sleep(interval)
            # Asked again now: continuous mode may have been switched off meanwhile.
            line = self._circuit.continuous_output(self._clock())
            if line is not None:
                self._link.write(self._out([Reply(0.0, line)]))
