"""Several monitor instances on one PostgreSQL state: who follows which box (docs/monitor.md).

The broker splits announcements between the instances of a shared-subscription
group without knowing boxes; the database's leases say which instance follows
which box. ``Sharding`` keeps this instance's leases (``Leases.claim`` every
third of a lease), adopts the boxes it gains (reloading their verified state,
which another instance may have advanced, and polling them at once) and drops
those it loses. An announcement for a box this instance does not follow is
forwarded through the database (``Leases.forward``) to the one that does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import TYPE_CHECKING

from .errors import FetchError, StateError
from .follow import Follower
from .state import Leases

if TYPE_CHECKING:
    from .monitor import Monitor

__all__ = ["Sharding", "default_instance"]

logger = logging.getLogger(__name__)

_SETTLE_S = 2.0  # longest wait between announcing this instance and its first claim


def default_instance() -> str:
    """``<host>-<pid>``: unique per running instance, so a restart is a new owner."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Sharding:
    """This instance's share of the boxes; ``run`` keeps it until cancelled."""

    def __init__(self, monitor: Monitor, leases: Leases, instance: str, lease_s: float) -> None:
        self.monitor = monitor
        self.leases = leases
        self.instance = instance
        self.lease_s = lease_s
        self.claimed = asyncio.Event()
        """Set after the first claim (the instance then knows its boxes)."""

    async def run(self) -> None:
        try:
            await self._leases()
        finally:
            # A clean stop hands the boxes over at once instead of after a lease.
            try:
                await asyncio.shield(self.leases.release(self.instance))
            except StateError as exc:
                logger.warning("releasing leases: %s", exc)

    async def _leases(self) -> None:
        mon = self.monitor
        origins = list(mon.boxes)
        # Be counted before taking anything: instances started together then share the
        # boxes from their first claim instead of the first one taking all of them.
        try:
            await self.leases.claim([], self.instance, self.lease_s)
        except StateError as exc:
            logger.warning("lease heartbeat: %s", exc)
        await asyncio.sleep(min(_SETTLE_S, self.lease_s / 3))
        while True:
            try:
                held = await self.leases.claim(origins, self.instance, self.lease_s)
            except StateError as exc:
                # The database unreachable: stop following rather than race another owner
                # once our leases run out.
                logger.warning("lease renewal: %s", exc)
                held = set()
            owned = mon.owned if mon.owned is not None else set()
            for origin in sorted(owned - held):
                logger.info("%s: lease gone, no longer followed here", origin)
            mon.owned = held & owned
            gained = sorted(held - owned)
            if gained:
                done = await asyncio.gather(
                    *(self._adopt(o) for o in gained), return_exceptions=True
                )
                for origin, r in zip(gained, done, strict=True):
                    if isinstance(r, StateError):  # not followed yet: the next claim retries
                        logger.warning("%s: taking over: %s", origin, r)
                    elif isinstance(r, BaseException):
                        raise r
                logger.info("following %d box(es) after gaining %d", len(held), len(gained))
            self.claimed.set()
            await asyncio.sleep(self.lease_s / 3)

    async def _adopt(self, origin: str) -> None:
        mon = self.monitor
        box = mon.boxes[origin]
        now = mon.clock()
        before = await mon.state.load(origin)
        follower = Follower(box.spec, before, now)
        # Silence is judged from the readings already verified, by whichever instance.
        seen, newest = await self.leases.last_readings(origin)
        follower.last_reading, follower.box_time = dict(seen), newest
        box.follower = follower
        box.pending = None
        opened = await mon.state.open_alerts()
        mon.open = {k for k in mon.open if k[0] != origin} | {k for k in opened if k[0] == origin}
        # Catch up before the box counts as followed, so the first tick judges silence on
        # what the box has published, not on what the previous owner had verified.
        try:
            note = await box.fetcher.get("checkpoint")
            if note is not None:
                box.taken = time.monotonic()
                await mon._step(box, note.decode("utf-8", "replace"))
        except FetchError as exc:
            logger.info("%s: taking over: %s (its next announcement or poll retries)", origin, exc)
        except StateError as exc:
            # Not stored: forget the step in memory too (as _follow does); verified again later.
            logger.warning("%s: taking over: %s", origin, exc)
            box.follower = Follower(box.spec, before, now)
            box.follower.last_reading, box.follower.box_time = dict(seen), newest
        assert mon.owned is not None
        mon.owned.add(origin)

    async def listen(self) -> None:
        """Offer the notes other instances forward (only this instance's boxes take them)."""
        async for note in self.leases.forwarded():
            self.monitor.offer(note)

    async def announced(self, note: str) -> None:
        """An announcement from the broker: followed here, or forwarded to the owner."""
        origin = note.split("\n", 1)[0]
        owned = self.monitor.owned
        if owned is not None and origin in owned:
            self.monitor.offer(note)
        elif origin in self.monitor.boxes:
            try:
                await self.leases.forward(note)
            except StateError as exc:
                logger.info("forwarding %s: %s (its owner polls)", origin, exc)
