"""The monitor's IO: HTTP fetching, MQTT announcements, polling, alerts out (docs/monitor.md).

``Monitor`` is an async context manager around one ``httpx.AsyncClient`` and a
``State``; ``run`` drives named tasks in one TaskGroup:

- ``monitor.box[<origin>]``: one per box, verifying the newest checkpoint offered
  (``follow.Follower.step``); offers arriving meanwhile coalesce to the newest.
- ``monitor.mqtt``: the shared subscription ``$share/<group>/<topic>`` (MQTT 5),
  reconnecting with a capped, jittered back-off.
- ``monitor.poll``: each box's ``checkpoint`` at start and every poll interval
  (a shared subscription gets no retained message, and the broker may be down).
- ``monitor.tick``: time-based alerts; ``monitor.manifest``: anchors (overdue, and
  their times stored for the page).
- ``monitor.webhook``: POSTs each new alert, with retries.

Alerts and clearances are printed as JSON lines to ``out`` (stdout by default).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
import sys
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx

from ledger_client.errors import LedgerClientError
from ledger_client.note import split_note
from ledger_client.witness import WitnessSigner, cosign

from .anchors import AnchorBook, anchor_alerts
from .config import MonitorConfig
from .errors import FetchError, StateError
from .follow import Alert, BoxSpec, Follower
from .shard import Sharding, default_instance
from .state import Leases
from .state_sqlite import State
from .web import PageServer, page_server

__all__ = ["HttpFetcher", "Monitor", "TileCache"]

logger = logging.getLogger(__name__)

_RETRY_CAP_S = 30.0  # a box whose files cannot be fetched is retried at least this often
_WEBHOOK_CAP_S = 60.0


class TileCache:
    """Immutable published files (``tile/...``) by URL, least recently used dropped first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self.hits = 0

    def get(self, url: str) -> bytes | None:
        data = self._items.get(url)
        if data is not None:
            self._items.move_to_end(url)
            self.hits += 1
        return data

    def put(self, url: str, data: bytes) -> None:
        if self.capacity <= 0:
            return
        self._items[url] = data
        self._items.move_to_end(url)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)


class HttpFetcher:
    """A box's published files over HTTP (``follow.Fetcher``), bounded and cached."""

    def __init__(
        self, client: httpx.AsyncClient, prefix: str, limit: asyncio.Semaphore, cache: TileCache
    ) -> None:
        self.client = client
        self.prefix = prefix.rstrip("/") + "/"
        self.limit = limit
        self.cache = cache
        self.requests = 0

    async def get(self, path: str) -> bytes | None:
        url = self.prefix + path
        immutable = path.startswith("tile/")  # tiles never change once written
        if immutable and (hit := self.cache.get(url)) is not None:
            return hit
        async with self.limit:
            self.requests += 1
            try:
                r = await self.client.get(url)
            except httpx.HTTPError as exc:
                raise FetchError(f"cannot fetch {url}: {exc!r}") from exc
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise FetchError(f"cannot fetch {url}: HTTP {r.status_code}")
        data = bytes(r.content)
        if immutable:
            self.cache.put(url, data)
        return data


@dataclass
class _Box:
    spec: BoxSpec
    follower: Follower
    fetcher: HttpFetcher
    anchors: AnchorBook
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    pending: str | None = None
    failures: int = 0
    offered: float = 0.0
    """When (monotonic) the pending note was offered."""
    taken: float = 0.0
    """When the note being verified was offered: the monitor's own lag is from then."""


def _size_hint(note: str) -> int | None:
    """The size a note claims (unverified: only to skip what is not new)."""
    lines = note.split("\n", 2)
    if len(lines) < 3 or not lines[1].isdigit():
        return None
    return int(lines[1])


def _backoff(attempt: int, cap: float) -> float:
    return random.uniform(0, min(cap, 0.5 * 2**attempt))  # noqa: S311 - jitter, not secrecy


class Monitor:
    """Follows the configured boxes until cancelled; an async context manager."""

    def __init__(
        self,
        config: MonitorConfig,
        state: State,
        *,
        out: TextIO | None = None,
        clock: Callable[[], float] = time.time,
        witness: WitnessSigner | None = None,
    ) -> None:
        self.config = config
        self.state = state
        self.out = sys.stdout if out is None else out
        self.clock = clock
        self.witness = witness
        self.boxes: dict[str, _Box] = {}
        self.open: set[tuple[str, str]] = set()
        self.cache = TileCache(config.cache_tiles)
        self._limit = asyncio.Semaphore(config.fetch_concurrency)
        self._client: httpx.AsyncClient | None = None
        self._webhook: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=10_000)
        self.verified_entries = 0
        self.page: PageServer | None = None
        self.owned: set[str] | None = None
        """The boxes this instance follows; None: all (a state no other instance shares)."""
        self.sharding: Sharding | None = None
        if isinstance(state, Leases):
            instance = config.instance or default_instance()
            self.sharding = Sharding(self, state, instance, config.lease_s)
            self.owned = set()

    async def __aenter__(self) -> Monitor:
        self._client = httpx.AsyncClient(
            timeout=self.config.fetch_timeout_s,
            follow_redirects=False,
            # Every connection kept alive: beyond httpx's default of 20 idle ones, each
            # response would close its connection and the next request open another.
            limits=httpx.Limits(
                max_connections=self.config.fetch_concurrency,
                max_keepalive_connections=self.config.fetch_concurrency,
            ),
        )
        now = self.clock()
        self.open = await self.state.open_alerts()
        for spec in self.config.boxes:
            verified = await self.state.load(spec.origin)
            fetcher = HttpFetcher(self._client, spec.url, self._limit, self.cache)
            book = AnchorBook(spec.origin, [k.verifier for k in spec.keys])
            self.boxes[spec.origin] = _Box(spec, Follower(spec, verified, now), fetcher, book)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.aclose()

    # --- the tasks ---------------------------------------------------------------------

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for origin, box in self.boxes.items():
                tg.create_task(self._follow(box), name=f"monitor.box[{origin}]")
            if self.config.listen is not None:
                self.page = page_server(self.config, self.state)
                tg.create_task(self.page.serve(), name="monitor.web")
            if self.sharding is not None:
                tg.create_task(self.sharding.run(), name="monitor.leases")
                tg.create_task(self.sharding.listen(), name="monitor.forwarded")
            if self.config.broker is not None:
                tg.create_task(self._mqtt(), name="monitor.mqtt")
            tg.create_task(self._poll(), name="monitor.poll")
            tg.create_task(self._tick(), name="monitor.tick")
            tg.create_task(self._manifests(), name="monitor.manifest")
            if self.config.webhook is not None:
                tg.create_task(self._post(self.config.webhook), name="monitor.webhook")

    def follows(self, origin: str) -> bool:
        """Whether this instance follows ``origin`` now (all boxes without leases)."""
        return self.owned is None or origin in self.owned

    def offer(self, note: str) -> bool:
        """A checkpoint note announced or polled; whether it is news for a followed box."""
        origin = note.split("\n", 1)[0]
        box = self.boxes.get(origin)
        size = _size_hint(note)
        if box is None or size is None or not self.follows(origin):
            return False
        have = box.follower.size
        pending = None if box.pending is None else _size_hint(box.pending)
        # Same size is news only if the root differs (a fork); the follower tells.
        if size < have or (pending is not None and size < pending):
            return False
        verified = box.follower.verified
        if size == have and verified is not None and _root_line(note) == _root_line(verified.note):
            return False
        if box.pending is None:
            box.offered = time.monotonic()
        box.pending = note
        box.wake.set()
        return True

    async def _follow(self, box: _Box) -> None:
        while True:
            await box.wake.wait()
            box.wake.clear()
            note, box.pending = box.pending, None
            box.taken = box.offered
            if note is None or not self.follows(box.spec.origin):
                continue
            before = box.follower.verified
            try:
                await self._step(box, note)
                box.failures = 0
                continue
            except FetchError as exc:
                why = str(exc)
            except StateError as exc:
                # The step was not stored: forget it in memory too, and verify it again.
                why = str(exc)
                box.follower = Follower(box.spec, before, self.clock())
            box.failures += 1
            delay = _backoff(box.failures, _RETRY_CAP_S)
            logger.warning("%s: %s; again in %.1f s", box.spec.origin, why, delay)
            if box.pending is None:
                box.pending = note
            await asyncio.sleep(delay)
            box.wake.set()

    async def _step(self, box: _Box, note: str) -> None:
        origin = box.spec.origin
        res = await box.follower.step(note, box.fetcher, self.clock())
        # Alerts before the step's commit: killed in between, the step is verified
        # again (by this instance or the next owner) and its alerts, keyed, not doubled.
        await self._raise(res.alerts)
        if res.advanced and res.verified is not None:
            cosigned = None
            if self.witness is not None:
                body = split_note(res.verified.note)[0]
                line = cosign(self.witness, body, max(1, int(self.clock())))
                cosigned = res.verified.note + line
            await self.state.commit(
                origin, res.verified, res.readings, res.gaps, cosigned, self.clock()
            )
            self.verified_entries += res.entries
            logger.info(
                "%s: verified checkpoint %d (%d new entries) %.3f s after it was offered",
                origin,
                res.verified.size,
                res.entries,
                time.monotonic() - box.taken,
            )
        await self._clear(origin, res.cleared)

    async def _raise(self, alerts: Iterable[Alert]) -> None:
        for a in alerts:
            if (a.origin, a.key) in self.open:
                continue
            if not await self.state.raise_alert(a):
                self.open.add((a.origin, a.key))
                continue  # raised before a restart: not again
            self.open.add((a.origin, a.key))
            doc = {"event": "alert", **a.to_json()}
            self._emit(doc)
            if self.config.webhook is not None:
                try:
                    self._webhook.put_nowait(doc)
                except asyncio.QueueFull:
                    logger.error("webhook queue full: alert %s %s not posted", a.origin, a.key)

    async def _clear(self, origin: str, keys: Iterable[str]) -> None:
        wanted = {k for k in keys if (origin, k) in self.open}
        if not wanted:
            return
        now = self.clock()
        for key in await self.state.clear(origin, wanted, now):
            self.open.discard((origin, key))
            self._emit({"event": "cleared", "origin": origin, "key": key, "time_s": now})

    def _emit(self, doc: dict[str, Any]) -> None:
        self.out.write(json.dumps(doc, sort_keys=True) + "\n")
        self.out.flush()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick_s)
            now = self.clock()
            for origin, box in self.boxes.items():
                if not self.follows(origin):
                    continue
                alerts, cleared = box.follower.tick(now)
                await self._raise(alerts)
                await self._clear(origin, cleared)

    async def _poll(self) -> None:
        while True:
            await asyncio.gather(*(self._poll_one(b) for b in self.boxes.values()))
            await asyncio.sleep(self.config.poll_interval_s)

    async def _poll_one(self, box: _Box) -> None:
        if not self.follows(box.spec.origin):
            return
        try:
            data = await box.fetcher.get("checkpoint")
        except FetchError as exc:
            logger.info("%s: poll: %s", box.spec.origin, exc)
            return
        if data is not None:
            self.offer(data.decode("utf-8", "replace"))

    async def _manifests(self) -> None:
        while True:
            for origin, box in self.boxes.items():
                if not self.follows(origin):
                    continue
                now = self.clock()
                try:
                    data = await box.fetcher.get("riverseal-bundle.json")
                    if data is None:
                        continue
                    overdue = box.spec.anchor_overdue_s > 0
                    cleared = box.follower.manifest(data, now) if overdue else []
                    # A first read of a full manifest checks up to 10,000 notes (~1.7 s):
                    # off the event loop, so verification and the page go on meanwhile.
                    marks = await asyncio.to_thread(box.anchors.read, data)
                except (FetchError, LedgerClientError) as exc:
                    logger.warning("%s: manifest: %s", origin, exc)
                    continue
                try:
                    await self.state.record_anchors(origin, marks, now)
                except StateError as exc:
                    box.anchors.forget(marks)  # read them again next time
                    logger.warning("%s: anchors not stored: %s", origin, exc)
                    marks = []
                bad, passed = anchor_alerts(origin, marks, now)
                await self._raise(bad)
                await self._clear(origin, [*cleared, *passed])
            await asyncio.sleep(self.config.manifest_interval_s)

    async def _mqtt(self) -> None:
        import aiomqtt  # the monitor without a broker needs no MQTT stack

        b = self.config.broker
        assert b is not None
        context = None
        if b.tls_ca is not None:
            context = ssl.create_default_context(cafile=str(b.tls_ca))
        topic = f"$share/{b.group}/{b.topic}"
        attempt = 0
        while True:
            try:
                async with aiomqtt.Client(
                    b.host,
                    b.port,
                    identifier=b.client_id or f"riverseal-monitor-{uuid.uuid4().hex[:12]}",
                    username=b.username,
                    password=b.password,
                    keepalive=b.keepalive,
                    protocol=aiomqtt.ProtocolVersion.V5,
                    tls_context=context,
                ) as client:
                    await client.subscribe(topic, qos=1)
                    logger.info("subscribed to %s on %s:%d", topic, b.host, b.port)
                    attempt = 0
                    async for message in client.messages:
                        payload = message.payload
                        if isinstance(payload, bytes | bytearray):
                            note = bytes(payload).decode("utf-8", "replace")
                            if self.sharding is None:
                                self.offer(note)
                            else:
                                await self.sharding.announced(note)
            except aiomqtt.MqttError as exc:
                attempt += 1
                delay = _backoff(attempt, b.retry_max_seconds)
                logger.warning("broker %s:%d: %s; again in %.1f s", b.host, b.port, exc, delay)
                await asyncio.sleep(delay)

    async def _post(self, url: str) -> None:
        assert self._client is not None
        while True:
            doc = await self._webhook.get()
            for attempt in range(1, self.config.webhook_retries + 1):
                try:
                    r = await self._client.post(
                        url, json=doc, timeout=self.config.webhook_timeout_s
                    )
                    if 200 <= r.status_code < 300:
                        break
                    why = f"HTTP {r.status_code}"
                except httpx.HTTPError as exc:
                    why = repr(exc)
                if attempt == self.config.webhook_retries:
                    logger.error(
                        "webhook: alert %s lost after %d tries: %s", doc["key"], attempt, why
                    )
                    break
                await asyncio.sleep(_backoff(attempt, _WEBHOOK_CAP_S))


def _root_line(note: str) -> str:
    """The root line of a checkpoint note (its third line)."""
    parts = note.split("\n", 3)
    return parts[2] if len(parts) > 2 else ""
