"""Reading and dropping what a device still says, until it has gone quiet."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from gateway.errors import ProtocolError, SensorTimeout

__all__ = ["LineReader", "drain"]


class LineReader(Protocol):
    async def readline(self, timeout: float) -> bytes: ...  # noqa: ASYNC109


async def drain(
    link: LineReader,
    *,
    quiet_s: float,
    within_s: float,
    dropped: Callable[[bytes], None] | None = None,
) -> None:
    """Drop lines until ``link`` has been silent for ``quiet_s``, or ``within_s`` is up.

    What is still on its way (the rest of a reboot, a late or noisy reply) would
    otherwise pair with the next command. Each dropped line goes to ``dropped``;
    noise (a ``ProtocolError`` from the link) is skipped.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while (left := deadline - loop.time()) > 0:
        try:
            line = await link.readline(min(quiet_s, left))
        except SensorTimeout:
            return
        except ProtocolError:
            continue
        if dropped is not None:
            dropped(line)
