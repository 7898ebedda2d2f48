"""Publish the log as C2SP tlog-tiles: ``gateway publish --to DIR|URL``.

The published log is a directory (or URL prefix) of files:

- ``tile/<L>/<N>[.p/<W>]`` and ``tile/entries/<N>[.p/<W>]``: hash tiles and
  entry bundles, immutable once written (a partial tile of width W is the same
  file for every tree size that has it);
- ``riverseal-bundle.json``: the manifest (device keys, the anchored
  checkpoints and their receipts), mutable;
- ``checkpoint``: the signed note of the newest checkpoint N, mutable.

Files go up in that order, the checkpoint last, so a reader never sees a
checkpoint whose tiles are missing. Publishing resumes from the target's own
``checkpoint``: if it is this log's (signed by the device key, same origin),
of a size M ≤ N and with our root at M, only what changed since M goes up —
the tiles of ``tiles_for(N, start=M)`` and their entry bundles. A target that
holds another log's checkpoint, a larger one, or a different root at M (a
fork) is refused and left untouched. An interrupted run leaves the target's
checkpoint at M, so running again completes it; re-writing an immutable file
writes the same bytes.

A directory target writes each file to a temporary name beside it, fsyncs it
and renames it into place. An HTTP target PUTs each file (a WebDAV-enabled
server such as nginx with ``dav_methods PUT``, or an object store), a few at
a time, retrying connection errors and 5xx answers with capped, jittered
back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

import httpx

from ledger_client.bundle import AnchorReceipt
from ledger_client.bundle_v2 import CHECKPOINT_NAME, MANIFEST_NAME, Manifest
from ledger_client.checkpoint import Checkpoint, open_checkpoint
from ledger_client.errors import LedgerClientError
from ledger_client.merkle import EMPTY_ROOT, fold, subtree_nodes
from ledger_client.note import split_note
from ledger_client.records import format_time
from ledger_client.tiles import ENTRIES, TileRef, tiles_for

from .backoff import Backoff
from .errors import GatewayError
from .export import _VERSION, device_keys
from .export_v2 import MANIFEST_MAX_ANCHORED
from .log import Log
from .retention import PUBLISHED_META, record_copy
from .store import CheckpointRow, Store

__all__ = [
    "DirTarget",
    "HttpTarget",
    "Position",
    "PublishError",
    "PublishRefused",
    "PublishStats",
    "Target",
    "open_target",
    "position",
    "publish",
    "publish_checkpoint",
]

logger = logging.getLogger(__name__)

TEXT = "text/plain; charset=utf-8"
OCTETS = "application/octet-stream"
JSON = "application/json"
CONCURRENCY = 8
"""HTTP requests in flight at once (a box's uplink, a server's patience)."""


class PublishError(GatewayError):
    """The target could not take (or give) a file."""

    hint = (
        "check the target (disk, network, server, credentials), then run gateway publish "
        "again: it resumes where it stopped"
    )


class PublishRefused(GatewayError):
    """The target holds a log that this log does not extend: never overwritten."""

    hint = (
        "the target was left as it is; publish this device's log to its own, empty target, "
        "and find out how the other checkpoint got there"
    )


@dataclass
class PublishStats:
    """What a run did (updated as it goes, for progress)."""

    target: str
    size: int = 0
    """N: the checkpoint published."""
    previous: int = 0
    """M: the size of the target's checkpoint before this run (0: none)."""
    planned: int = 0
    """Files this run writes, manifest and checkpoint included."""
    files: int = 0
    bytes: int = 0


class Target(Protocol):
    """Where a published log goes: files by their tlog-tiles paths."""

    name: str

    async def get(self, path: str) -> bytes | None:
        """The file's bytes, or None if there is no such file."""
        ...

    async def put(self, path: str, data: bytes, content_type: str) -> None:
        """Write the file whole (replacing it), or raise PublishError."""
        ...


class DirTarget:
    """A local directory: each file written to a temp name, fsynced, renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = str(root)

    async def __aenter__(self) -> DirTarget:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    async def get(self, path: str) -> bytes | None:
        try:
            return await asyncio.to_thread((self.root / path).read_bytes)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PublishError(f"reading {self.root / path} failed: {exc}") from exc

    async def put(self, path: str, data: bytes, content_type: str) -> None:
        try:
            await asyncio.to_thread(_write_atomically, self.root / path, data)
        except OSError as exc:
            raise PublishError(f"writing {self.root / path} failed: {exc}") from exc


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # published files are for anyone to read
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class HttpTarget:
    """A URL prefix: GET and PUT each file under it, with retries.

    Args:
        url: the prefix (``http://`` or ``https://``); files go to ``url/<path>``.
        headers: sent with every request (e.g. ``Authorization``).
        transport: an httpx transport (tests inject failing ones).
        client: a client to share (a simulated fleet's boxes share one); not closed here.
        attempts: tries per request before giving up, counting the first.
        backoff_base_s, backoff_cap_s: the jittered back-off between tries.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        client: httpx.AsyncClient | None = None,
        timeout_s: float = 30.0,
        attempts: int = 6,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 10.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise PublishError(f"{url!r} is not an http:// or https:// URL")
        self.prefix = url.rstrip("/")
        self.name = url
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(transport=transport, timeout=timeout_s)
        self._headers = dict(headers or {})
        self._attempts = attempts
        self._backoff = (backoff_base_s, backoff_cap_s)

    async def __aenter__(self) -> HttpTarget:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._own_client:
            await self._client.aclose()

    def url(self, path: str) -> str:
        return f"{self.prefix}/{path}"

    async def _request(
        self, method: str, path: str, content: bytes | None, headers: Mapping[str, str]
    ) -> httpx.Response:
        """One request, retried on connection errors, 429 and 5xx; the final answer."""
        url = self.url(path)
        backoff = Backoff(*self._backoff)
        problem = ""
        for attempt in range(1, self._attempts + 1):
            try:
                response = await self._client.request(
                    method, url, content=content, headers={**self._headers, **headers}
                )
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            except httpx.HTTPError as exc:
                raise PublishError(f"{method} {url} failed: {exc}") from exc
            else:
                if response.status_code < 500 and response.status_code != 429:
                    return response
                problem = f"HTTP {response.status_code} {response.reason_phrase}"
            if attempt < self._attempts:
                delay = await backoff.sleep()
                logger.info("%s %s: %s; try %d in %.1f s", method, url, problem, attempt + 1, delay)
        raise PublishError(f"{method} {url} failed {self._attempts} times, last: {problem}")

    async def get(self, path: str) -> bytes | None:
        response = await self._request("GET", path, None, {"Cache-Control": "no-cache"})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise PublishError(
                f"GET {self.url(path)}: HTTP {response.status_code} {response.reason_phrase}"
            )
        return response.content

    async def put(self, path: str, data: bytes, content_type: str) -> None:
        response = await self._request("PUT", path, data, {"Content-Type": content_type})
        if response.status_code not in (200, 201, 204):
            raise PublishError(
                f"PUT {self.url(path)}: HTTP {response.status_code} {response.reason_phrase}"
            )


def open_target(to: str, *, headers: Mapping[str, str] | None = None) -> DirTarget | HttpTarget:
    """A target for ``--to``: an http(s) URL, else a directory."""
    if to.startswith(("http://", "https://")):
        return HttpTarget(to, headers=headers)
    if headers:
        raise PublishError("--header is for http:// and https:// targets only")
    return DirTarget(Path(to))


async def publish(
    log: Log,
    target: Target,
    *,
    concurrency: int = CONCURRENCY,
    progress: Callable[[PublishStats], None] | None = None,
    clock: Callable[[], int] = time.time_ns,
) -> PublishStats:
    """Publish the newest checkpoint (signing one first if entries are not covered)."""
    await log.checkpoint()
    newest = await log.store.latest_checkpoint()
    if newest is None:
        raise GatewayError("the log is empty: nothing to publish yet")
    return await publish_checkpoint(
        log, target, newest, concurrency=concurrency, progress=progress, clock=clock
    )


@dataclass(frozen=True)
class Position:
    """What a target holds of this log: its checkpoint file, checked to be ours."""

    size: int
    """The size of the target's checkpoint (0: it has none)."""
    note: bytes | None
    """The checkpoint file as the target holds it (None: none)."""


async def publish_checkpoint(
    log: Log,
    target: Target,
    newest: CheckpointRow,
    *,
    at: Position | None = None,
    concurrency: int = CONCURRENCY,
    progress: Callable[[PublishStats], None] | None = None,
    clock: Callable[[], int] = time.time_ns,
    pace: Callable[[int], Awaitable[None]] | None = None,
) -> PublishStats:
    """Publish the stored checkpoint ``newest``: its new tiles, the manifest, then the note.

    ``at``: the target's position, when the caller has just read it (else it is read
    and checked here). The note is written when its size is new or its text differs
    (a witness's cosignature was added since). ``pace(n)`` is awaited before each
    file of ``n`` bytes goes up (the daemon's rate bound); files are read from the
    store one tile at a time, at most ``concurrency`` ahead of the upload.
    """
    store = log.store
    stats = PublishStats(target=target.name, size=newest.size)
    if at is None:
        at = await position(log, target, newest)
    stats.previous = m = at.size
    note = newest.note.encode("utf-8")
    refs = [] if m == newest.size else list(tiles_for(newest.size, start=m))
    files = refs + [TileRef(ENTRIES, r.index, r.width) for r in refs if r.level == 0]
    new_note = m != newest.size or at.note != note
    stats.planned = len(files) + 1 + new_note

    async def put(path: str, data: bytes, content_type: str) -> None:
        if pace is not None:
            await pace(len(data))
        await target.put(path, data, content_type)
        stats.files += 1
        stats.bytes += len(data)
        if progress is not None:
            progress(stats)

    async def copy(ref: TileRef) -> None:
        if ref.level == ENTRIES:
            data = await store.entry_bundle(ref.index, ref.width)
        else:
            data = await store.tile(ref.level, ref.index, ref.width)
        await put(ref.path, data, OCTETS)

    await _bounded(copy, files, concurrency)
    await put(MANIFEST_NAME, await _manifest(log, newest, clock), JSON)
    if new_note:
        await put(CHECKPOINT_NAME, note, TEXT)
    # Retention's input, written once the target holds it all, never before.
    await record_copy(store, PUBLISHED_META, newest.size)
    return stats


async def _bounded(
    work: Callable[[TileRef], Awaitable[None]], items: Iterable[TileRef], concurrency: int
) -> None:
    """``work`` on every item, at most ``concurrency`` at once.

    After the first GatewayError no new item is started, but the ones in
    flight are let finish (a write is never abandoned half way), then that
    first error is raised.
    """
    queue = iter(items)
    failed: list[GatewayError] = []

    async def worker() -> None:
        for item in queue:  # one iterator shared by all workers: each item once
            if failed:
                return
            try:
                await work(item)
            except GatewayError as exc:
                failed.append(exc)
                return

    async with asyncio.TaskGroup() as group:
        for k in range(max(1, concurrency)):
            group.create_task(worker(), name=f"gateway.publish[{k}]")
    if failed:
        raise failed[0]


async def position(log: Log, target: Target, newest: CheckpointRow) -> Position:
    """The target's checkpoint, if this log (at ``newest``) extends it; else PublishRefused."""
    data = await target.get(CHECKPOINT_NAME)
    if data is None:
        return Position(0, None)
    where = f"{target.name} holds a checkpoint"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PublishRefused(f"{where} file that is not UTF-8 text") from None
    try:
        theirs = open_checkpoint(text, [log.key.signer.verifier()])
    except LedgerClientError as exc:
        raise PublishRefused(
            f"{where} that is not this log's ({_describe(text)}; ours is {log.key.origin} "
            f"size {newest.size}): {exc}"
        ) from None
    ours = f"this log's newest checkpoint has size {newest.size}, root {newest.root.hex()}"
    if theirs.origin != log.key.origin:
        raise PublishRefused(f"{where} of origin {theirs.origin!r}, not {log.key.origin!r}")
    if theirs.size > newest.size:
        raise PublishRefused(
            f"{where} of size {theirs.size}, root {theirs.root.hex()}, larger than ours: {ours}"
        )
    root = await _root_at(log.store, theirs.size)
    if root != theirs.root:
        raise PublishRefused(
            f"{where} of size {theirs.size} with root {theirs.root.hex()}, but this log's root "
            f"at size {theirs.size} is {root.hex()}: the two logs have forked ({ours})"
        )
    return Position(theirs.size, data)


def _describe(note: str) -> str:
    """Origin and size of a checkpoint note, read without trusting it."""
    try:
        cp = Checkpoint.parse(split_note(note)[0])
    except (LedgerClientError, ValueError):
        return "not a checkpoint note"
    return f"origin {cp.origin!r}, size {cp.size}, root {cp.root.hex()}"


async def _root_at(store: Store, size: int) -> bytes:
    """Our tree's root at ``size``: a stored checkpoint's, else folded from stored hashes."""
    if size == 0:
        return EMPTY_ROOT
    rows = await store.checkpoints(size, size)
    if rows:
        return rows[0].root
    wanted = subtree_nodes(0, size)
    found = await store.nodes(wanted)
    return fold([found[n] for n in wanted])


async def _manifest(log: Log, newest: CheckpointRow, clock: Callable[[], int]) -> bytes:
    """riverseal-bundle.json: keys, the anchored checkpoints up to N (§15.2) and N, receipts."""
    store = log.store
    cps, anchors = await store.anchored_checkpoints(
        1, newest.size, at_most=MANIFEST_MAX_ANCHORED, always=[newest.size]
    )
    manifest = Manifest(
        origin=log.key.origin,
        device=log.key.device_id,
        keys=await device_keys(log),  # every key of a rotated box, with its window
        checkpoints=tuple(c.note for c in cps),
        anchors=tuple(
            AnchorReceipt(a.checkpoint, a.backend, a.digest, a.state, json.loads(a.receipt))
            for a in anchors
        ),
        start=0,
        selection=None,
        exported=format_time(clock()),
        exporter=_VERSION,
    )
    return manifest.dumps()
