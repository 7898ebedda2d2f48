"""A recording Sink for driver tests: keeps what it is given, with dedup like the real one;
and ``running``, a source's ``run`` into it for the length of a block."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Callable

from gateway.drivers.base import Source
from gateway.pipeline import Event, Gap, Reading

__all__ = ["RecordingSink", "running"]


class RecordingSink:
    """A Sink that keeps what it is given, with dedup like the real one.

    ``gate``: when set to an unset Event, ``submit`` waits on it before
    committing (a slow disk). ``wait_for`` polls a condition with a deadline.
    """

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.gaps: list[Gap] = []
        self.rejects: list[tuple[str, str, str]] = []
        self.submitted: list[Reading] = []  # every call, duplicates included
        self.returned: list[bool] = []
        self.gate: asyncio.Event | None = None
        self.events: list[object] = []  # readings and gaps in commit order
        self.records: list[Event] = []  # event records (e.g. sensor-info)
        self._keys: set[tuple[str, str]] = set()

    async def submit_event(self, event: Event) -> None:
        self.records.append(event)

    async def submit(self, reading: Reading) -> bool:
        self.submitted.append(reading)
        if self.gate is not None:
            await self.gate.wait()
        key = (reading.sensor, reading.dedup_key) if reading.dedup_key else None
        if key is not None and key in self._keys:
            self.returned.append(False)
            return False
        if key is not None:
            self._keys.add(key)
        self.readings.append(reading)
        self.events.append(reading)
        self.returned.append(True)
        return True

    async def submit_gap(self, gap: Gap) -> None:
        self.gaps.append(gap)
        self.events.append(gap)

    def reject(self, sensor: str, reason: str, detail: str) -> None:
        self.rejects.append((sensor, reason, detail))

    def reject_counts(self) -> collections.Counter[str]:
        return collections.Counter(reason for _, reason, _ in self.rejects)

    async def wait_for(
        self, condition: Callable[[], bool], within: float = 5.0, what: str = ""
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not condition():
            if loop.time() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what or condition}: readings={len(self.readings)} "
                    f"rejects={self.rejects[-5:]}"
                )
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(source: Source, sink: RecordingSink) -> AsyncIterator[asyncio.Task[None]]:
    """``source.run(sink)`` as a task for the block; cancelled and awaited after it."""
    task = asyncio.get_running_loop().create_task(source.run(sink), name=f"test[{source.name}]")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
