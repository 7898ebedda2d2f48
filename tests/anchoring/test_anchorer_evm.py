"""The anchoring state machine with the evm backend on real anvil nodes, over a real
log database: restarts, an unreachable or refusing ledger, and a reorg.

The anchorer's monotonic clock is explicit, so a back-off is skipped by moving
it rather than by waiting it out.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.anchoring.anchorer import Anchorer
from gateway.anchoring.evm import EvmBackend
from gateway.config.anchor_evm import EvmAnchorConfig
from gateway.export import export_bundle
from gateway.keys import AnchorKey, create_anchor_key, create_device_key
from gateway.log import Log
from gateway.pipeline import Reading, Value
from gateway.store import AnchorRow, Store
from ledger_client.checkpoint import Checkpoint
from ledger_client.evm import EvmChecker, parse_anchor_calldata
from ledger_client.note import split_note
from ledger_client.trust import parse_trust
from ledger_client.verify import VERIFIED_STATUS, verify_bundle
from tests.servers.anvil_node import AnvilNode, running_anvil

NAME = "evm:test"


@dataclass
class Station:
    store: Store
    log: Log
    key: AnchorKey
    tmp: Path

    async def checkpoint(self, n: int = 1) -> int:
        now = time.time_ns()
        readings = [Reading("t-1", (Value("temperature", 9.5, "Cel"),), now + i) for i in range(n)]
        await self.log.append(readings, checkpoint=True)
        cp = self.log.last_checkpoint
        assert cp is not None
        return cp.size

    async def digest(self, size: int) -> bytes:
        (cp,) = await self.store.checkpoints(size, size)
        return Checkpoint.parse(split_note(cp.note)[0]).digest()

    async def rows(self) -> list[AnchorRow]:
        return await self.store.anchors(NAME)


@pytest.fixture
async def station(tmp_path: Path) -> AsyncIterator[Station]:
    device = create_device_key(tmp_path / "device.key")
    async with Store(tmp_path / "log.sqlite") as store:
        log = Log(store, device)
        await log.open()
        yield Station(store, log, create_anchor_key(tmp_path / "anchor.key"), tmp_path)


class Monotonic:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def backend(node: AnvilNode, key: AnchorKey, **settings: Any) -> EvmBackend:
    cfg = EvmAnchorConfig(
        name="test", chain_id=node.chain_id, rpc=(node.url,), timeout_seconds=2.0, **settings
    )
    return EvmBackend(cfg, key)


async def step_until_final(anchorer: Anchorer, station: Station, size: int) -> None:
    deadline = time.monotonic() + 20
    while not any(r.checkpoint == size and r.state == "final" for r in await station.rows()):
        assert time.monotonic() < deadline, [(r.checkpoint, r.state) for r in await station.rows()]
        await asyncio.sleep(0.1)
        await anchorer.step()


def anchored_sizes(node: AnvilNode, key: AnchorKey) -> list[int]:
    """Tree sizes in the calldata of every transaction the key got mined, in chain order."""
    txs = node.transactions_from(key.address)
    return [parse_anchor_calldata(bytes.fromhex(t["input"][2:]))[1] for t in txs]


async def test_a_restart_picks_up_the_pending_anchor_and_nothing_is_sent_twice(
    tmp_path: Path, station: Station
) -> None:
    with running_anvil(tmp_path / "node", no_mining=True) as node:
        node.fund(station.key.address)
        cp1 = await station.checkpoint()
        first = backend(node, station.key)
        await Anchorer(station.store, [first]).step()
        await first.aclose()
        (row,) = await station.rows()
        assert (row.checkpoint, row.state) == (cp1, "pending")
        sent = json.loads(row.receipt)["sent"]
        # The daemon restarts: a new anchorer and backend read the state back from the store.
        again = backend(node, station.key)
        anchorer = Anchorer(station.store, [again])
        await anchorer.step()
        (row,) = await station.rows()
        assert json.loads(row.receipt)["sent"] == sent  # polled, not submitted again
        node.mine(3)
        await anchorer.step()
        cp2 = await station.checkpoint(4)
        await anchorer.step()  # cp1 is final: the newest checkpoint goes next
        node.mine(3)
        for _ in range(3):
            await anchorer.step()
        await again.aclose()
        rows = await station.rows()
        assert [(r.checkpoint, r.state) for r in rows] == [(cp1, "final"), (cp2, "final")]
        assert anchored_sizes(node, station.key) == [cp1, cp2]
    st = anchorer.status[NAME]
    assert (st.last_final, st.pending, st.last_error) == (cp2, [], None)


async def test_an_unreachable_ledger_backs_off_then_only_the_newest_is_anchored(
    tmp_path: Path, station: Station
) -> None:
    with running_anvil(tmp_path / "node") as node:
        node.fund(station.key.address)
        mono = Monotonic()
        evm = backend(node, station.key)
        anchorer = Anchorer(station.store, [evm], retry_max_seconds=30, monotonic=mono)
        cp1 = await station.checkpoint()
        node.stop()
        await anchorer.step()
        st = anchorer.status[NAME]
        assert st.failures == 1
        assert st.last_error is not None and "no JSON-RPC endpoint answered" in st.last_error
        assert st.next_try > mono.t
        (row,) = await station.rows()
        assert (row.checkpoint, row.receipt, row.attempts) == (cp1, "{}", 1)
        assert row.last_error is not None
        await anchorer.step()  # inside the back-off: not even tried
        assert (await station.rows())[0].attempts == 1
        # The log goes on while the ledger is away.
        sizes = [await station.checkpoint(3) for _ in range(3)]
        node.start()  # the same chain, the same port
        mono.t = st.next_try
        await anchorer.step()
        assert [r.checkpoint for r in await station.rows()] == [sizes[-1]]  # cp1 was dropped
        await step_until_final(anchorer, station, sizes[-1])
        await evm.aclose()
        assert anchored_sizes(node, station.key) == [sizes[-1]]  # one anchor, not a backlog
    assert (st.failures, st.last_error, st.last_final) == (0, None, sizes[-1])


async def test_a_refused_anchor_is_reported_and_superseded_once_the_ledger_accepts(
    anvil: AnvilNode, station: Station
) -> None:
    mono = Monotonic()
    evm = backend(anvil, station.key)
    anchorer = Anchorer(station.store, [evm], monotonic=mono)
    cp1 = await station.checkpoint()
    await anchorer.step()  # the account has no funds yet
    st = anchorer.status[NAME]
    assert st.last_error is not None and "fund it" in st.last_error
    (row,) = await station.rows()
    assert (row.checkpoint, row.state, row.receipt) == (cp1, "pending", "{}")
    assert row.last_error is not None and "fund it" in row.last_error
    anvil.fund(station.key.address)
    cp2 = await station.checkpoint(2)
    mono.t = st.next_try
    await step_until_final(anchorer, station, cp2)
    await evm.aclose()
    assert [(r.checkpoint, r.state) for r in await station.rows()] == [(cp2, "final")]
    assert anchored_sizes(anvil, station.key) == [cp2]


async def test_a_reorg_is_noticed_and_the_digest_anchored_again(
    tmp_path: Path, station: Station
) -> None:
    with running_anvil(tmp_path / "node", block_time=None) as node:  # automine
        node.fund(station.key.address)
        evm = backend(node, station.key)
        anchorer = Anchorer(station.store, [evm])
        cp = await station.checkpoint(5)
        states = []

        async def step() -> AnchorRow:
            await anchorer.step()
            (row,) = await station.rows()
            states.append(row.state)
            return row

        sent = await step()
        node.wait_for_receipt(json.loads(sent.receipt)["sent"][0]["hash"])
        included = await step()
        node.rpc("anvil_reorg", 1, [])
        dropped = await step()
        assert dropped.last_error is not None and "left the chain" in dropped.last_error
        assert anchorer.status[NAME].last_error == dropped.last_error
        node.wait_for_receipt(json.loads(included.receipt)["tx"])  # sent again, mined again
        again = await step()
        node.mine(2)
        final = await step()
        await evm.aclose()
        assert states == ["pending", "included", "pending", "included", "final"]
        first, last = json.loads(included.receipt), json.loads(final.receipt)
        assert last["tx"] == first["tx"]
        assert last["block_hash"] != first["block_hash"]
        assert again.digest == final.digest == await station.digest(cp)
        assert anchored_sizes(node, station.key) == [cp]  # on the chain once
        assert anchorer.status[NAME].last_error is None  # final again: healthy
        # The regulator's node agrees with the receipt the bundle carries.
        bundle = await export_bundle(station.log)
        trust = parse_trust(
            f"key {station.log.key.vkey}\nevm-sender {node.chain_id} {station.key.address}\n"
        )
        checker = EvmChecker([node.url], trust)
        report = verify_bundle(bundle, trust, now=datetime.now(UTC), anchor_checkers=[checker])
    assert report.ok, report.failures
    (evm_result,) = [a for a in report.anchors if a.backend == NAME]
    assert evm_result.status == VERIFIED_STATUS
    assert last["tx"] in evm_result.detail
