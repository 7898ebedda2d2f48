"""A published mirror, verified where it is served: gateway publish → nginx → ledger-verify.

Issue 8, acceptance 6: publish to a real HTTP server, interrupted mid-copy and
resumed, then ``ledger-verify http://…`` verifies the mirror; a mirror whose
checkpoint was replaced by an older one, or by a forked one, fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from pathlib import Path
from typing import Any

import httpx
import nacl.signing
import pytest

from gateway.keys import DeviceKey, device_id_for
from gateway.log import Log
from gateway.pipeline import Reading, Value
from gateway.publish import HttpTarget, PublishError, publish
from gateway.store import Store
from ledger_client.cli import main as verify_main
from ledger_client.note import Signer
from tests.servers.web_server import WebServer

T0 = 1_772_323_200_000_000_000  # 2026-03-01T00:00:00Z
SEED = 41


def device_key(seed: int = SEED) -> DeviceKey:
    raw = bytes([seed]) * 32
    device = device_id_for(bytes(nacl.signing.SigningKey(raw).verify_key))
    return DeviceKey(device, Signer.from_seed(f"riverseal/{device}", raw))


class CutOff(httpx.AsyncBaseTransport):
    """Passes the first ``after`` PUTs to the real server, then the link drops."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.real = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            if self.after <= 0:
                raise httpx.ConnectError("the cellular link dropped", request=request)
            self.after -= 1
        return await self.real.handle_async_request(request)

    async def aclose(self) -> None:
        await self.real.aclose()


async def grow(log: Log, size: int, salt: float = 0.0) -> None:
    while log.size < size:
        n = min(size - log.size, 500)
        at = log.size
        batch = [
            Reading(
                f"ph-{(at + i) % 3}",
                (Value("ph", round(7.0 + salt + ((at + i) % 50) / 100, 2), "pH"),),
                T0 + (at + i) * 10**9,
            )
            for i in range(n)
        ]
        await log.append(batch, checkpoint=True)


def verify(source: str, trust: Path) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        rc = verify_main([source, "--trust", str(trust), "--json", "--jobs", "2"])
    return rc, json.loads(out.getvalue())


def put(url: str, data: bytes) -> None:
    httpx.put(url, content=data).raise_for_status()


async def test_publish_cut_off_resume_then_verify_where_it_is_served(
    tmp_path: Path, web_server: WebServer
) -> None:
    key = device_key()
    trust = tmp_path / "trust.txt"
    trust.write_text(f"key {key.vkey}\n")
    prefix = f"{web_server.url}/mirror/{key.device_id}"
    async with Store(tmp_path / "log.sqlite") as store:
        log = Log(store, key, clock=lambda: T0)
        await log.open()
        await grow(log, 700)
        async with HttpTarget(prefix) as t:
            await publish(log, t, clock=lambda: T0)
        first_note = (await store.latest_checkpoint()).note  # type: ignore[union-attr]
        await grow(log, 3_000)
        async with HttpTarget(prefix, transport=CutOff(after=9), attempts=1) as t:
            with pytest.raises(PublishError):
                await publish(log, t, clock=lambda: T0)
        # Cut off mid-copy: readers still see a whole log of 700.
        rc, doc = await asyncio.to_thread(verify, prefix, trust)
        assert rc == 3, doc["failures"][:5]  # trusted keys, local anchors only
        assert doc["entries"] == 700 and doc["checkpoints"][-1] == 700
        async with HttpTarget(prefix) as t:
            stats = await publish(log, t, clock=lambda: T0)
        assert (stats.previous, stats.size) == (700, 3_000)

    rc, doc = await asyncio.to_thread(verify, prefix, trust)
    assert rc == 3, doc["failures"][:5]
    assert doc["level"] == "authentic-undated" and doc["keys_trusted"]
    assert doc["entries"] == 3_000 and doc["checkpoints"][-1] == 3_000
    assert doc["first_index"] == 0 and doc["last_index"] == 2_999

    # The served checkpoint rolled back to an older one of the same log: refused.
    newest = httpx.get(f"{prefix}/checkpoint").content
    put(f"{prefix}/checkpoint", first_note.encode())
    rc, doc = await asyncio.to_thread(verify, prefix, trust)
    assert rc == 1
    assert any("older than checkpoint 3000" in f["reason"] for f in doc["failures"])

    # A forked checkpoint: the same key signed another history of the same size.
    async with Store(tmp_path / "fork.sqlite") as store:
        fork = Log(store, key, clock=lambda: T0)
        await fork.open()
        await grow(fork, 3_000, salt=0.5)
        forked = (await store.latest_checkpoint()).note  # type: ignore[union-attr]
    assert forked.encode() != newest
    put(f"{prefix}/checkpoint", forked.encode())
    rc, doc = await asyncio.to_thread(verify, prefix, trust)
    assert rc == 5 and doc["level"] == "forked"
    (fork,) = doc["forks"]
    assert {fork["a"]["note"], fork["b"]["note"]} == {forked, newest.decode()}
    text = " ".join(f["reason"] for f in doc["failures"])
    assert "forked history" in text
    assert any(f["check"] == "consistency" and f["checkpoint"] == 3_000 for f in doc["failures"])

    # Put back, it verifies again: nothing else was harmed.
    put(f"{prefix}/checkpoint", newest)
    rc, doc = await asyncio.to_thread(verify, prefix, trust)
    assert rc == 3 and doc["failure_count"] == 0


async def test_a_tile_changed_on_the_server_is_named(tmp_path: Path, web_server: WebServer) -> None:
    key = device_key(SEED + 1)
    trust = tmp_path / "trust.txt"
    trust.write_text(f"key {key.vkey}\n")
    prefix = f"{web_server.url}/m"
    async with Store(tmp_path / "log.sqlite") as store:
        log = Log(store, key, clock=lambda: T0)
        await log.open()
        await grow(log, 1_000)
        async with HttpTarget(prefix) as t:
            await publish(log, t, clock=lambda: T0)
    tile = bytearray(httpx.get(f"{prefix}/tile/0/001").content)
    tile[40] ^= 1
    put(f"{prefix}/tile/0/001", bytes(tile))
    rc, doc = await asyncio.to_thread(verify, prefix, trust)
    assert rc == 1
    assert any("tile/0 hash 1 of tile 1" in f["reason"] for f in doc["failures"]), doc["failures"]
    httpx.delete(f"{prefix}/tile/entries/002").raise_for_status()
    rc, doc = await asyncio.to_thread(verify, prefix, trust)
    assert rc == 1
    assert any("tile/entries/002 is missing" in f["reason"] for f in doc["failures"])
