"""Witness cosignatures for the box's checkpoints (C2SP tlog-witness, cosignature/v1).

After each checkpoint is signed, every ``[[witnesses]]`` entry is asked to
cosign the newest one: ``POST <url>/add-checkpoint`` with ``old <size>``, the
consistency proof from that size (computed from the store's subtree hashes)
and the signed note. The size is the largest checkpoint that witness has
cosigned according to the store (0 when none); a 409 reply names the size the
witness really holds and the request is made again from there. A 200 reply's
cosignature is checked against the configured vkey, then kept in the store's
``cosignatures`` table, which appends it to the checkpoint's note whenever the
note is read (export v1 and v2, publish, ``.tlog-proof`` evidence).

One named task per witness (``gateway.witness[<name>]``); each works on the
newest checkpoint only (a cosignature on N covers every size below it, as an
anchor does), so a witness back after an outage is asked once, not once per
missed checkpoint. Failures (unreachable, 5xx, refusals) back off with capped,
jittered delays and never touch ingest. A refusal (4xx other than 409) means
the witness does not accept this log's history — for 422, a split view — and
is logged as an error every time it recurs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from ledger_client.errors import LedgerClientError
from ledger_client.merkle import consistency_plan, fold
from ledger_client.records import format_time
from ledger_client.witness import (
    AddCheckpoint,
    parse_conflict_size,
    parse_cosign_response,
)

from .backoff import Backoff
from .config.witnesses import WitnessConfig
from .errors import GatewayError
from .store import CheckpointRow, Store

__all__ = ["WitnessError", "WitnessRefused", "WitnessStatus", "WitnessUnavailable", "Witnessing"]

logger = logging.getLogger(__name__)

_CONFLICT_RETRIES = 3  # 409 → retry from the size it names; more in a row means it keeps moving
_MAX_REPLY_BYTES = 65_536


class WitnessError(GatewayError):
    """A witness did not cosign a checkpoint."""


class WitnessUnavailable(WitnessError):
    """Retryable: the witness could not be reached, timed out or answered 5xx."""


class WitnessRefused(WitnessError):
    """The witness refused the checkpoint (``status``: 400, 403, 404, 422, or a 409 loop)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class WitnessStatus:
    """What status shows for one witness."""

    name: str
    cosigned: int | None = None
    """The largest checkpoint size it has cosigned (from the store)."""
    cosigned_at: str | None = None
    last_error: str | None = None
    failures: int = 0
    """Consecutive failed attempts (0: healthy)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "cosigned": self.cosigned,
            "cosigned_at": self.cosigned_at,
            "last_error": self.last_error,
            "failures": self.failures,
        }


class Witnessing:
    """Asks each configured witness to cosign the newest checkpoint; ``notify`` wakes it."""

    def __init__(
        self,
        store: Store,
        witnesses: Sequence[WitnessConfig],
        *,
        client: httpx.AsyncClient | None = None,
        base_s: float = 0.5,
    ) -> None:
        self.store = store
        self.witnesses = tuple(witnesses)
        self._client = client
        self._base_s = base_s
        self._newest: CheckpointRow | None = None
        self._wake = {w.vkey.to_vkey(): asyncio.Event() for w in self.witnesses}
        self.status = {w.vkey.to_vkey(): WitnessStatus(w.name) for w in self.witnesses}
        """Per witness vkey."""
        self.on_cosigned: list[Callable[[int], None]] = []
        """Called with a checkpoint's size each time a cosignature of it is stored: a
        publisher that already sent that checkpoint sends its note again (with it)."""

    def notify(self, cp: CheckpointRow) -> None:
        """A checkpoint was signed: each witness is asked for it (or a newer one) soon."""
        if self._newest is None or cp.size > self._newest.size:
            self._newest = cp
        for event in self._wake.values():
            event.set()

    async def run(self) -> None:
        """Follow every witness until cancelled."""
        if not self.witnesses:
            return
        if self._newest is None:
            self._newest = await self.store.latest_checkpoint()
        async with contextlib.AsyncExitStack() as stack:
            client = self._client
            if client is None:
                client = await stack.enter_async_context(httpx.AsyncClient())
            async with asyncio.TaskGroup() as tg:
                for w in self.witnesses:
                    tg.create_task(self._follow(client, w), name=f"gateway.witness[{w.name}]")

    async def finish(self, timeout_s: float = 5.0) -> None:
        """At shutdown: one try per witness, bounded, for the newest checkpoint."""
        target = self._newest
        if target is None or not self.witnesses:
            return
        async with httpx.AsyncClient() as client:
            for w in self.witnesses:
                status = self.status[w.vkey.to_vkey()]
                if status.cosigned is not None and status.cosigned >= target.size:
                    continue
                try:
                    async with asyncio.timeout(timeout_s):
                        await self.cosign(client, w, target)
                except (GatewayError, TimeoutError) as exc:
                    logger.warning(
                        "witness %s: final checkpoint %d not cosigned: %s",
                        w.name,
                        target.size,
                        exc or "timed out",
                    )

    async def _follow(self, client: httpx.AsyncClient, w: WitnessConfig) -> None:
        key = w.vkey.to_vkey()
        wake, status = self._wake[key], self.status[key]
        backoff = Backoff(self._base_s, w.retry_max_seconds)
        known = False
        wake.set()
        while True:
            await wake.wait()
            wake.clear()
            target = self._newest
            try:
                if not known:
                    status.cosigned = await self.store.cosigned_size(key)
                    known = True
                if target is None or (status.cosigned or 0) >= target.size:
                    continue
                await self.cosign(client, w, target)
            except GatewayError as exc:  # a witness's or the store's: never the daemon's end
                status.failures += 1
                status.last_error = str(exc)
                delay = backoff.next_delay()
                log = logger.error if isinstance(exc, WitnessRefused) else logger.warning
                log(
                    "witness %s: checkpoint %d not cosigned (%s); next try in %.1f s",
                    w.name,
                    -1 if target is None else target.size,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                wake.set()
            else:
                backoff.reset()
                status.failures, status.last_error = 0, None

    async def cosign(self, client: httpx.AsyncClient, w: WitnessConfig, cp: CheckpointRow) -> str:
        """Get ``w``'s cosignature on ``cp`` and store it; the cosignature line.

        Raises WitnessUnavailable or WitnessRefused.
        """
        key = w.vkey.to_vkey()
        status = self.status[key]
        note = cp.note  # other witnesses' lines may ride along: unknown keys are ignored
        old = status.cosigned or 0
        for _ in range(_CONFLICT_RETRIES):
            if old > cp.size:
                raise WitnessRefused(
                    f"it holds size {old}, beyond this checkpoint {cp.size}: it has seen "
                    "a longer history of this log than this box has",
                    409,
                )
            proof = await self._proof(old, cp.size)
            body = AddCheckpoint(old, proof, note).encode()
            reply = await self._post(client, w, body)
            if reply.status_code == 409:
                try:
                    old = parse_conflict_size(reply.content)
                except LedgerClientError as exc:
                    raise WitnessRefused(f"malformed 409 reply: {exc}", 409) from exc
                logger.info("witness %s holds size %d; asking again from there", w.name, old)
                continue
            if reply.status_code != 200:
                text = reply.content[:200].decode("utf-8", "replace").strip()
                raise WitnessRefused(f"HTTP {reply.status_code}: {text}", reply.status_code)
            try:
                cosig = parse_cosign_response(reply.content, note, w.vkey)
            except LedgerClientError as exc:
                raise WitnessRefused(f"reply is not its cosignature: {exc}", 200) from exc
            await self.store.add_cosignature(cp.size, key, cosig.line)
            for hook in self.on_cosigned:
                hook(cp.size)
            status.cosigned = cp.size
            status.cosigned_at = format_time(time.time_ns())
            logger.info("witness %s cosigned checkpoint %d", w.name, cp.size)
            return cosig.line
        raise WitnessRefused(f"409 {_CONFLICT_RETRIES} times in a row", 409)

    async def _proof(self, old: int, new: int) -> tuple[bytes, ...]:
        if old == 0 or old == new:
            return ()
        plan = consistency_plan(old, new)
        found = await self.store.nodes(n for element in plan for n in element)
        return tuple(fold([found[n] for n in element]) for element in plan)

    async def _post(
        self, client: httpx.AsyncClient, w: WitnessConfig, body: bytes
    ) -> httpx.Response:
        try:
            reply = await client.post(
                f"{w.url}/add-checkpoint",
                content=body,
                timeout=w.timeout_s,
                headers={"Content-Type": "text/plain; charset=utf-8"},
            )
        except httpx.HTTPError as exc:
            raise WitnessUnavailable(f"{w.url}: {type(exc).__name__}: {exc}") from exc
        if reply.status_code >= 500:
            raise WitnessUnavailable(f"{w.url}: HTTP {reply.status_code}")
        if len(reply.content) > _MAX_REPLY_BYTES:
            raise WitnessRefused(f"reply of {len(reply.content)} bytes", reply.status_code)
        return reply

    def status_json(self) -> dict[str, dict[str, Any]]:
        return {s.name: s.to_json() for s in self.status.values()}
