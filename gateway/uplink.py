"""The uplink: the daemon publishes its log as it grows (``[uplink]``, docs/operations.md).

After each checkpoint the ``gateway.uplink`` task publishes what is new —
hash tiles, entry bundles, the manifest, then the checkpoint last — with the
same code as ``gateway publish`` (gateway/publish.py), to an HTTP(S) prefix
taking PUT or to a directory. The target's own ``checkpoint`` is the
position: after any outage (the box's, the link's, the server's) the uplink
reads it, checks that this log extends it, and carries on from there; a
target holding another log or a fork is refused and left untouched.

A backlog goes up in steps of at most ``step_entries`` entries, each ending
with a checkpoint the store already holds, so readers see progress and an
interruption costs at most one step. Uploads are paced by a token bucket of
``max_bytes_per_s``; each file is read from the store just before it goes up
(one tile, at most 256 entries, per query), so a week-long outage drains
without holding the store or the event loop that ingest commits on. Failures
back off with capped, jittered delays, cut short when the box signs a new
checkpoint (an endpoint back after a long outage then gets it at once, not up
to ``retry_max_seconds`` later); nothing here ever waits on ingest or makes
ingest wait.

After each upload the published size is raised in the store's meta
(gateway/retention.py's ``published_size``, by publish_checkpoint): retention
never prunes a record the target does not hold. Each published checkpoint is
then announced over MQTT (``[uplink.announce]``: QoS 1, retained, one topic per device) by the
``gateway.uplink.announce`` task, which reconnects with back-off and
re-announces the newest note after every reconnection (a restarted broker
may have lost its retained messages); a dead broker never holds the upload.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import aiomqtt
import httpx

from .backoff import Backoff
from .config.uplink import AnnounceConfig, UplinkConfig
from .errors import GatewayError
from .log import Log
from .publish import (
    DirTarget,
    HttpTarget,
    Position,
    PublishRefused,
    PublishStats,
    Target,
    position,
    publish_checkpoint,
)
from .retention import PUBLISHED_META
from .store import CheckpointRow, Store

__all__ = [
    "AnnounceError",
    "Announcer",
    "TokenBucket",
    "Uplink",
    "open_uplink_target",
    "published_size",
]

logger = logging.getLogger(__name__)


_POLL_S = 30.0
"""With nothing new signalled, the store is looked at this often anyway (a witness's
cosignature added to a published checkpoint makes its note new)."""
_BACKOFF_BASE_S = 1.0
_WAKE_FLOOR_S = 1.0
"""A retry woken by a new checkpoint still waits this long after a failure (at most the
back-off delay), so a box signing often does not hammer a dead endpoint."""


class AnnounceError(GatewayError):
    """The announcement broker could not be reached or did not acknowledge in time."""

    hint = "check [uplink.announce] (host, port, TLS files, credentials) and the broker"


async def published_size(store: Store) -> int | None:
    """The size the uplink's target holds, per the store (None: nothing published yet).

    Retention's input: entries at or above it must be kept until it grows.
    """
    text = await store.get_meta(PUBLISHED_META)
    return int(text) if text is not None and text.isdigit() else None  # retention's mark


class TokenBucket:
    """A byte-rate bound: pure, with an explicit clock (seconds).

    Holds up to ``burst`` tokens, refilled at ``rate`` a second. ``reserve(n, now)``
    takes ``n`` tokens at once, going into debt if need be (a file larger than the
    burst still goes up), and says how long to wait before using them.
    """

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be > 0")
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self._at = now

    def reserve(self, n: int, now: float) -> float:
        self.tokens = min(self.burst, self.tokens + (now - self._at) * self.rate)
        self._at = now
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


def open_uplink_target(
    config: UplinkConfig, *, client: httpx.AsyncClient | None = None
) -> DirTarget | HttpTarget:
    """The target of ``[uplink] to``, with its headers and credentials."""
    if not config.is_http:
        return DirTarget(Path(config.to))
    headers = dict(config.headers)
    if config.token is not None:
        headers["Authorization"] = f"Bearer {config.token}"
    elif config.username is not None:
        pair = f"{config.username}:{config.password or ''}".encode()
        headers["Authorization"] = f"Basic {base64.b64encode(pair).decode('ascii')}"
    return HttpTarget(
        config.to,
        headers=headers,
        client=client,
        timeout_s=config.timeout_s,
        attempts=2,  # the uplink's own back-off takes over after that
        backoff_cap_s=2.0,
    )


class Announcer:
    """Announces notes over MQTT: QoS 1, retained; the newest per topic wins.

    ``announce`` never waits: it records the note and wakes the ``run`` task,
    which connects (with capped, jittered back-off), publishes what is pending
    and, after every (re)connection, the newest note of every topic again.
    One Announcer may serve several devices (a simulated fleet): topics are
    independent.
    """

    def __init__(
        self,
        config: AnnounceConfig,
        *,
        identifier: str,
        connect: Callable[[], aiomqtt.Client] | None = None,
    ) -> None:
        self.config = config
        self.identifier = identifier
        self._connect = connect
        self._latest: dict[str, bytes] = {}
        self._pending: dict[str, bytes] = {}
        self._wake = asyncio.Event()
        self.drained = asyncio.Event()
        """Set while the broker has acknowledged every note announced."""
        self.connected = False
        self.announced = 0
        """Announcements acknowledged by the broker since the start."""
        self.last_error: str | None = None
        self.last_error_ns: int | None = None
        self.failures = 0

    def announce(self, topic: str, note: bytes) -> None:
        self._latest[topic] = note
        self._pending[topic] = note
        self.drained.clear()
        self._wake.set()

    async def flush(self) -> None:
        """Announce what is pending on a connection of its own (at shutdown, bounded by
        the caller), when the ``run`` task is not running."""
        if self._pending:
            await self._session(Backoff(_BACKOFF_BASE_S, self.config.retry_max_seconds), once=True)

    async def _idle(self, client: aiomqtt.Client) -> None:
        """Until something is to be announced, or the connection is lost (MqttError):
        nothing is subscribed, so the message iterator ends only with the connection,
        and a restarted broker is noticed (and given the newest note) while idle."""
        woke = asyncio.create_task(self._wake.wait(), name="gateway.uplink.announce.wake")

        async def next_message() -> None:
            await anext(aiter(client.messages))

        lost = asyncio.create_task(next_message(), name="gateway.uplink.announce.link")
        try:
            done, _ = await asyncio.wait({woke, lost}, return_when=asyncio.FIRST_COMPLETED)
            if lost in done:
                lost.result()  # raises the MqttError of the lost connection
        finally:
            for task in (woke, lost):
                task.cancel()
            await asyncio.gather(woke, lost, return_exceptions=True)

    def facts(self) -> dict[str, Any]:
        return {
            "broker": _broker_name(self.config),
            "connected": self.connected,
            "announced": self.announced,
            "pending": len(self._pending),
            "last_error": self.last_error,
            "last_error_ns": self.last_error_ns,
            "failures": self.failures,
        }

    async def _client(self) -> aiomqtt.Client:
        if self._connect is not None:
            return self._connect()
        from .drivers.mqtt.source import check_tls, new_client, tls_context

        b = self.config.broker
        context: ssl.SSLContext | None = tls_context(b)
        # Our own handshake first: paho leaks its socket when one fails.
        await check_tls(b, context)
        return new_client(b, b.client_id or self.identifier, persistent=False, context=context)

    async def run(self) -> None:
        """Until cancelled: stay connected while there is something to announce."""
        backoff = Backoff(_BACKOFF_BASE_S, self.config.retry_max_seconds)
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
            try:
                try:
                    await self._session(backoff)
                except (aiomqtt.MqttError, OSError) as exc:  # the one boundary
                    raise AnnounceError(f"{type(exc).__name__}: {exc}") from exc
            except (TimeoutError, GatewayError) as exc:
                self.connected = False
                self.failures += 1
                error = str(exc) or type(exc).__name__
                if error != self.last_error:
                    logger.warning("uplink announce: %s: %s", _broker_name(self.config), error)
                self.last_error, self.last_error_ns = error, time.time_ns()
                await backoff.sleep()

    async def _session(self, backoff: Backoff, *, once: bool = False) -> None:
        timeout = self.config.timeout_s
        async with asyncio.timeout(timeout):
            client = await self._client()
            try:
                await client.__aenter__()
            except BaseException:
                from .drivers.mqtt.source import discard_client

                discard_client(client)  # aiomqtt leaves the socket of a failed attempt open
                raise
        try:
            self.connected = True
            # A restarted broker may have lost its retained messages: the newest again.
            self._pending = {**self._latest, **self._pending}
            while True:
                while self._pending:
                    topic, note = next(iter(self._pending.items()))
                    async with asyncio.timeout(timeout):
                        await client.publish(topic, note, qos=1, retain=True)
                        _raise_lost_cancel()
                    if self._pending.get(topic) is note:
                        del self._pending[topic]
                    self.announced += 1
                    if self.failures:
                        logger.info("uplink announce: %s takes announcements again", topic)
                    self.failures, self.last_error = 0, None
                    backoff.reset()
                self.drained.set()
                if once:
                    return
                self._wake.clear()
                await self._idle(client)
        finally:
            self.connected = False
            with contextlib.suppress(aiomqtt.MqttError, OSError, TimeoutError):
                async with asyncio.timeout(2.0):
                    await client.__aexit__(None, None, None)


def _raise_lost_cancel() -> None:
    """Raise the cancellation aiomqtt's ``asyncio.wait_for`` drops on Python 3.11 when it
    arrives as the publish completes: else the announcer would idle on, uncancelled."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _broker_name(config: AnnounceConfig) -> str:
    b = config.broker
    return f"{'mqtts' if b.tls_ca is not None else 'mqtt'}://{b.host}:{b.port}"


class Uplink:
    """Publishes ``log`` to ``config.to`` as it grows; an async context manager.

    Use ``async with Uplink(...) as up`` and run ``up.run()`` as a task; call
    ``notify`` from the on-checkpoint hook. ``target`` and ``announcer`` may be
    given (a simulated fleet shares one client and one broker connection);
    ``backoff`` paces retries after failures (default: from 1 s, capped at
    ``retry_max_seconds``).
    """

    def __init__(
        self,
        log: Log,
        config: UplinkConfig,
        *,
        target: Target | None = None,
        announcer: Announcer | None = None,
        client: httpx.AsyncClient | None = None,
        poll_s: float = _POLL_S,
        backoff: Backoff | None = None,
    ) -> None:
        self.log = log
        self.config = config
        self._target = target
        self._client = client
        self._announcer = announcer
        self._own_announcer = False
        self._poll_s = poll_s
        self._anchors_published: tuple[int, int] | None = None
        """``Store.anchor_counts`` when the manifest was last written (None: not yet)."""
        self._backoff = backoff or Backoff(_BACKOFF_BASE_S, config.retry_max_seconds)
        self._stack = contextlib.AsyncExitStack()
        self._wake = asyncio.Event()
        self._entered = False
        self._held: Position | None = None
        """The target's position as last read or written (None: not known yet)."""
        self._bucket = TokenBucket(config.max_bytes_per_s, config.max_bytes_per_s, time.monotonic())
        self.topic = (
            config.announce.topic_for(log.key.device_id) if config.announce is not None else None
        )
        self.published: int | None = None
        self.published_ns: int | None = None
        self.pending_since_ns: int | None = None
        """Signing time of the oldest checkpoint not yet on the target."""
        self.newest: int | None = None
        """The newest checkpoint size known to the uplink."""
        self.last_error: str | None = None
        self.last_error_ns: int | None = None
        self.failures = 0
        self.retry_until: float | None = None
        """While waiting to retry after a failure: when the wait ends (event loop time)."""
        self.woken = 0
        """Retries started before their back-off ended because a new checkpoint was signed."""
        self.bytes_total = 0
        self.files_total = 0
        self._entry_bytes: float | None = None
        """Published bytes per entry, as measured (for the backlog estimate)."""

    @property
    def target(self) -> Target:
        if self._target is None:
            raise GatewayError("the uplink is not open: use it as 'async with Uplink(...)'")
        return self._target

    async def __aenter__(self) -> Uplink:
        if self._entered:
            raise GatewayError("an Uplink cannot be entered twice")
        self._entered = True
        if self._target is None:
            target = open_uplink_target(self.config, client=self._client)
            self._target = await self._stack.enter_async_context(target)
        if self._announcer is None and self.config.announce is not None:
            self._announcer = Announcer(
                self.config.announce, identifier=f"riverseal-uplink-{self.log.key.device_id}"
            )
            self._own_announcer = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    def notify(self, cp: CheckpointRow) -> None:
        """A checkpoint was signed (the daemon's on-checkpoint hook): never waits."""
        if self.newest is None or cp.size > self.newest:
            self.newest = cp.size
        if self.pending_since_ns is None and (self.published is None or cp.size > self.published):
            self.pending_since_ns = cp.time_ns
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled: publish each new checkpoint, and announce it."""
        async with asyncio.TaskGroup() as tg:
            if self._announcer is not None and self._own_announcer:
                tg.create_task(self._announcer.run(), name="gateway.uplink.announce")
            tg.create_task(self._follow(), name="gateway.uplink.publish")

    async def _follow(self) -> None:
        backoff = self._backoff
        while True:
            self._wake.clear()
            try:
                caught_up = await self.step()
            except GatewayError as exc:
                self._failed(exc)
                await self._retry_wait(backoff.next_delay())
                continue
            backoff.reset()
            if caught_up:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll_s):
                        await self._wake.wait()

    async def _retry_wait(self, delay: float) -> None:
        """The back-off ``delay`` after a failure, ended early (after ``_WAKE_FLOOR_S``) by a
        checkpoint signed since the failed try began. The back-off keeps its count: if
        the endpoint is still down, the next wait is as long as it would have been."""
        loop = asyncio.get_running_loop()
        self.retry_until = end = loop.time() + delay
        try:
            await asyncio.sleep(min(delay, _WAKE_FLOOR_S))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(end):
                    await self._wake.wait()
                    self.woken += 1
        finally:
            self.retry_until = None

    async def finish(self, timeout_s: float = 5.0) -> None:
        """At shutdown: a bounded last try to publish the final checkpoint (and announce it)."""
        try:
            async with asyncio.timeout(timeout_s):
                while not await self.step():
                    pass
                if self._announcer is not None and self._own_announcer and self.topic:
                    await self._announcer.flush()
        except (GatewayError, TimeoutError) as exc:
            logger.warning("uplink: the final checkpoint was not published: %s", exc or "timeout")

    def _failed(self, exc: GatewayError) -> None:
        self.failures += 1
        error = str(exc)
        if isinstance(exc, PublishRefused):
            logger.error("uplink to %s refused: %s", self.target.name, error)
        elif error != self.last_error:
            logger.warning("uplink to %s: %s (will retry)", self.target.name, error)
        self.last_error, self.last_error_ns = error, time.time_ns()
        self._held = None  # read the target's checkpoint again: it may have moved

    async def step(self) -> bool:
        """Publish one step towards the newest checkpoint; True once the target holds it."""
        store = self.log.store
        newest = await store.latest_checkpoint()
        if newest is None:
            return True
        self.newest = max(self.newest or 0, newest.size)
        note = newest.note.encode("utf-8")
        held = self._held
        if held is None or held.size > newest.size:
            held = self._held = await position(self.log, self.target, newest)
            await self._moved(held.size, newest)
        if held.size == newest.size and held.note == note:
            # Caught up; but an anchor that became final since the manifest was written
            # must reach the regulator before the next checkpoint does.
            counts = await store.anchor_counts()
            if counts != self._anchors_published:
                await publish_checkpoint(self.log, self.target, newest, at=held, pace=self._pace)
                self._anchors_published = counts
            return True
        counts = await store.anchor_counts()
        cp = newest
        if newest.size - held.size > self.config.step_entries:
            cp = await self._step_checkpoint(held.size)
        stats = await publish_checkpoint(
            self.log,
            self.target,
            cp,
            at=held,
            concurrency=self.config.concurrency,
            pace=self._pace,
        )
        self._held = Position(cp.size, cp.note.encode("utf-8"))
        self._anchors_published = counts  # the manifest just written read at least these
        await self._published(stats, cp, newest)
        return cp.size == newest.size

    async def _step_checkpoint(self, held: int) -> CheckpointRow:
        """The stored checkpoint a backlog step ends at: the largest within
        ``step_entries`` of ``held``, else the next one after it."""
        store = self.log.store
        below, above = await store.checkpoint_sizes_around(held + self.config.step_entries)
        size = below if below is not None and below > held else above
        rows = await store.checkpoints(size, size) if size is not None else []
        if not rows:
            raise GatewayError(f"no stored checkpoint above size {held} to publish")
        return rows[0]

    async def _pace(self, n: int) -> None:
        delay = self._bucket.reserve(n, time.monotonic())
        await asyncio.sleep(delay)  # 0 still yields: ingest runs between files

    async def _published(
        self, stats: PublishStats, cp: CheckpointRow, newest: CheckpointRow
    ) -> None:
        if self.failures:
            logger.info("uplink to %s works again", self.target.name)
        self.failures, self.last_error, self.last_error_ns = 0, None, None
        self.bytes_total += stats.bytes
        self.files_total += stats.files
        if cp.size > stats.previous:
            self._entry_bytes = stats.bytes / (cp.size - stats.previous)
        self.published_ns = time.time_ns()
        await self._moved(cp.size, newest)
        logger.debug(
            "uplink: published checkpoint %d (%d files, %d bytes)",
            cp.size,
            stats.files,
            stats.bytes,
        )
        if self._announcer is not None and self.topic is not None:
            self._announcer.announce(self.topic, cp.note.encode("utf-8"))

    async def _moved(self, size: int, newest: CheckpointRow) -> None:
        """The target holds ``size``: when has the oldest checkpoint above it waited since?"""
        self.published = size
        if size >= newest.size:
            self.pending_since_ns = None
            return
        _, above = await self.log.store.checkpoint_sizes_around(size + 1)
        rows = await self.log.store.checkpoints(above, above) if above is not None else []
        self.pending_since_ns = rows[0].time_ns if rows else newest.time_ns

    def facts(self) -> dict[str, Any]:
        """Plain data for the status document (gateway/health/model.py)."""
        backlog = None
        if self._entry_bytes is not None and self.newest is not None:
            backlog = round(max(0, self.newest - (self.published or 0)) * self._entry_bytes)
        out: dict[str, Any] = {
            "target": self.target.name if self._target is not None else self.config.to,
            "published": self.published,
            "published_ns": self.published_ns,
            "pending_since_ns": self.pending_since_ns,
            "backlog_bytes": backlog,
            "bytes": self.bytes_total,
            "files": self.files_total,
            "last_error": self.last_error,
            "last_error_ns": self.last_error_ns,
            "failures": self.failures,
            "announce": self._announcer.facts() if self._announcer is not None else None,
        }
        return out
