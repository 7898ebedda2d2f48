"""The evm backend against real anvil nodes: pending → included → final, the fee
rules, replacements (and the earlier transaction landing), dropped transactions,
a nonce taken by someone else, and a reorg.

The backend's clock is explicit, so "this transaction has waited long enough to
be replaced" is set by the test, not waited for.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from gateway.anchoring.backend import AnchorProgress
from gateway.anchoring.evm import EvmBackend
from gateway.anchoring.evm_tx import AnchorTx, Fees, sign_tx
from gateway.config.anchor_evm import EvmAnchorConfig
from gateway.errors import LedgerRejected
from gateway.keys import AnchorKey, create_anchor_key
from ledger_client.evm import anchor_calldata, parse_anchor_calldata
from ledger_client.records import format_time
from tests.servers.anvil_node import AnvilNode, running_anvil

DIGEST = hashlib.sha256(b"a checkpoint body").digest()
DEAD = "0x000000000000000000000000000000000000dEaD"


class Clock:
    def __init__(self) -> None:
        self.ns = time.time_ns()

    def __call__(self) -> int:
        return self.ns

    def advance(self, seconds: float) -> None:
        self.ns += int(seconds * 1e9)


def config(node: AnvilNode, **settings: Any) -> EvmAnchorConfig:
    return EvmAnchorConfig(name="test", chain_id=node.chain_id, rpc=(node.url,), **settings)


@pytest.fixture
def key(tmp_path: Path) -> AnchorKey:
    return create_anchor_key(tmp_path / "anchor.key")


async def poll_until(
    backend: EvmBackend, progress: AnchorProgress, state: str, timeout: float = 20.0
) -> tuple[AnchorProgress, list[str]]:
    """Poll as the anchorer would until ``state``; return it and the states seen."""
    seen = [progress.state]
    deadline = time.monotonic() + timeout
    while progress.state != state:
        assert time.monotonic() < deadline, f"still {progress.state} after {timeout} s"
        await asyncio.sleep(0.05)
        progress = await backend.poll(DIGEST, progress.receipt)
        if progress.state != seen[-1]:
            seen.append(progress.state)
    return progress, seen


def hashes(receipt: Mapping[str, Any]) -> list[str]:
    return [s["hash"] for s in receipt["sent"]]


async def test_an_anchor_goes_pending_included_final_by_the_finalized_tag(
    anvil: AnvilNode, key: AnchorKey
) -> None:
    anvil.fund(key.address)
    backend = EvmBackend(config(anvil), key)
    try:
        first = await backend.submit(DIGEST, 4242)
        assert first.state == "pending"
        assert first.error is None
        final, seen = await poll_until(backend, first, "final")
    finally:
        await backend.aclose()
    assert seen == ["pending", "included", "final"]  # finalized trails the head by 2 blocks
    r = final.receipt
    assert r["tx"] == hashes(r)[0]
    assert r["finality"] == "finalized"
    assert r["chain_id"] == anvil.chain_id
    tx = anvil.rpc("eth_getTransactionByHash", r["tx"])
    assert (
        bytes.fromhex(tx["input"][2:])
        == anchor_calldata(DIGEST, 4242)
        == bytes.fromhex(r["calldata"][2:])
    )
    assert tx["from"].lower() == tx["to"].lower() == key.address.lower()  # a self-send
    assert int(tx["type"], 16) == 2
    assert int(tx["blockNumber"], 16) == r["block"]
    mined = anvil.rpc("eth_getTransactionReceipt", r["tx"])
    assert r["gas_used"] == int(mined["gasUsed"], 16)
    assert r["block_hash"] == mined["blockHash"]
    block = anvil.rpc("eth_getBlockByNumber", hex(r["block"]), False)
    assert r["block_time"] == format_time(int(block["timestamp"], 16) * 10**9)


async def test_counting_confirmations_where_asked(tmp_path: Path, key: AnchorKey) -> None:
    with running_anvil(tmp_path, block_time=None) as node:  # one block per transaction
        node.fund(key.address)
        backend = EvmBackend(config(node, finality="confirmations", confirmations=3), key)
        try:
            p = await backend.submit(DIGEST, 7)
            node.wait_for_receipt(hashes(p.receipt)[-1])
            p = await backend.poll(DIGEST, p.receipt)
            assert p.state == "included"  # 1 confirmation: its own block
            node.mine(1)
            p = await backend.poll(DIGEST, p.receipt)
            assert p.state == "included"
            node.mine(1)
            p = await backend.poll(DIGEST, p.receipt)
        finally:
            await backend.aclose()
    assert p.state == "final"
    assert (p.receipt["finality"], p.receipt["confirmations"]) == ("confirmations", 3)


async def test_free_gas_legacy_transactions_to_a_sink(tmp_path: Path, key: AnchorKey) -> None:
    # A free-gas permissioned network (Besu with min-gas-price 0 and base fee 0): the
    # anchoring account holds nothing and pays nothing.
    extra = ("--block-base-fee-per-gas", "0", "--gas-price", "0")
    with running_anvil(tmp_path, block_time=None, extra=extra) as node:
        cfg = config(node, fees="legacy", to=DEAD, finality="confirmations", confirmations=1)
        backend = EvmBackend(cfg, key)
        try:
            p = await backend.submit(DIGEST, 11)
            node.wait_for_receipt(hashes(p.receipt)[-1])
            p = await backend.poll(DIGEST, p.receipt)
        finally:
            await backend.aclose()
        tx = node.rpc("eth_getTransactionByHash", p.receipt["tx"])
        balance = int(node.rpc("eth_getBalance", key.address, "latest"), 16)
    assert p.state == "final"
    assert int(tx["type"], 16) == 0
    assert int(tx["gasPrice"], 16) == 0
    assert tx["to"].lower() == DEAD.lower()
    assert p.receipt["to"] == DEAD
    assert balance == 0
    assert parse_anchor_calldata(bytes.fromhex(tx["input"][2:])) == (DIGEST, 11)


async def test_an_unfunded_account_is_told_to_get_funds(anvil: AnvilNode, key: AnchorKey) -> None:
    backend = EvmBackend(config(anvil), key)
    try:
        with pytest.raises(LedgerRejected, match=f"{key.address} cannot pay for gas.*fund it"):
            await backend.submit(DIGEST, 1)
    finally:
        await backend.aclose()


# --- replacement -------------------------------------------------------------------------


async def test_a_stuck_transaction_is_replaced_and_the_replacement_recorded(
    tmp_path: Path, key: AnchorKey
) -> None:
    clock = Clock()
    with running_anvil(tmp_path, no_mining=True) as node:  # nothing is mined until we say
        node.fund(key.address)
        backend = EvmBackend(config(node, replace_after_seconds=60), key, clock=clock)
        try:
            p = await backend.submit(DIGEST, 3)
            clock.advance(30)
            p = await backend.poll(DIGEST, p.receipt)
            assert (p.state, len(p.receipt["sent"])) == ("pending", 1)  # not yet: 30 s < 60 s
            clock.advance(31)
            p = await backend.poll(DIGEST, p.receipt)
            assert (p.state, len(p.receipt["sent"])) == ("pending", 2)
            a, b = p.receipt["sent"]
            assert a["nonce"] == b["nonce"]
            assert b["max_fee"] >= a["max_fee"] * 1.125
            assert b["priority_fee"] >= a["priority_fee"] * 1.125
            assert node.rpc("eth_getTransactionByHash", a["hash"]) is None  # replaced in the pool
            node.mine(1)
            p = await backend.poll(DIGEST, p.receipt)
            assert (p.state, p.receipt["tx"]) == ("included", b["hash"])
            node.mine(2)
            p = await backend.poll(DIGEST, p.receipt)
        finally:
            await backend.aclose()
        assert p.state == "final"
        assert hashes(p.receipt) == [a["hash"], b["hash"]]  # every hash sent is remembered
        assert len(node.transactions_from(key.address)) == 1


async def test_when_the_earlier_transaction_lands_it_is_the_one_recorded(
    tmp_path: Path, key: AnchorKey
) -> None:
    clock = Clock()
    with running_anvil(tmp_path, no_mining=True) as node:
        node.fund(key.address)
        backend = EvmBackend(config(node, replace_after_seconds=60), key, clock=clock)
        try:
            p = await backend.submit(DIGEST, 3)
            clock.advance(61)
            p = await backend.poll(DIGEST, p.receipt)
            a, b = p.receipt["sent"]
            # Another node still had the first transaction and a miner took it: here, the
            # replacement leaves the pool and the original bytes arrive again.
            node.rpc("anvil_dropTransaction", b["hash"])
            original = AnchorTx(
                node.chain_id,
                a["nonce"],
                p.receipt["to"],
                bytes.fromhex(p.receipt["calldata"][2:]),
                p.receipt["gas"],
                Fees.from_json(a),
            )
            raw = sign_tx(original, key.private_key)
            assert raw.hash == a["hash"]  # the receipt holds all it takes to rebuild it
            node.rpc("eth_sendRawTransaction", raw.raw)
            node.mine(3)
            p = await backend.poll(DIGEST, p.receipt)
        finally:
            await backend.aclose()
    assert p.state == "final"
    assert p.receipt["tx"] == a["hash"]
    assert hashes(p.receipt) == [a["hash"], b["hash"]]


async def test_at_the_fee_caps_the_wait_is_reported_not_hidden(
    tmp_path: Path, key: AnchorKey
) -> None:
    clock = Clock()
    with running_anvil(tmp_path, no_mining=True) as node:
        node.fund(key.address)
        base = int(node.rpc("eth_getBlockByNumber", "latest", False)["baseFeePerGas"], 16)
        cfg = config(
            node, replace_after_seconds=10, max_fee_gwei=base / 1e9, max_priority_fee_gwei=0.0
        )
        backend = EvmBackend(cfg, key, clock=clock)
        try:
            p = await backend.submit(DIGEST, 3)
            clock.advance(11)
            p = await backend.poll(DIGEST, p.receipt)
        finally:
            await backend.aclose()
    assert p.state == "pending"
    assert len(p.receipt["sent"]) == 1
    assert p.error is not None
    assert "at the fee caps" in p.error
    assert "max_fee_gwei" in p.error


async def test_a_transaction_the_node_forgot_is_sent_again_unchanged(
    tmp_path: Path, key: AnchorKey
) -> None:
    with running_anvil(tmp_path, no_mining=True) as node:
        node.fund(key.address)
        backend = EvmBackend(config(node), key)
        try:
            p = await backend.submit(DIGEST, 3)
            (a,) = hashes(p.receipt)
            node.rpc("anvil_dropTransaction", a)
            assert node.rpc("eth_getTransactionByHash", a) is None
            p = await backend.poll(DIGEST, p.receipt)
            assert hashes(p.receipt) == [a]
            assert node.rpc("eth_getTransactionByHash", a) is not None  # back in the pool
            node.mine(3)
            p = await backend.poll(DIGEST, p.receipt)
        finally:
            await backend.aclose()
    assert (p.state, p.receipt["tx"]) == ("final", a)


async def test_a_nonce_taken_by_another_transaction_gets_a_fresh_anchor(
    tmp_path: Path, key: AnchorKey
) -> None:
    with running_anvil(tmp_path, no_mining=True) as node:
        node.fund(key.address)
        backend = EvmBackend(config(node), key)
        try:
            p = await backend.submit(DIGEST, 3)
            (a,) = p.receipt["sent"]
            # Someone with the same key (a second box by mistake) uses nonce 0 first.
            other = AnchorTx(
                node.chain_id,
                a["nonce"],
                DEAD,
                b"",
                21_000,
                Fees(max_fee=a["max_fee"] * 2, priority_fee=a["priority_fee"] * 2),
            )
            node.rpc("eth_sendRawTransaction", sign_tx(other, key.private_key).raw)
            node.mine(1)
            p = await backend.poll(DIGEST, p.receipt)
            assert p.state == "pending"
            assert p.error is not None and "used by another transaction" in p.error
            first, second = p.receipt["sent"]
            assert (first["nonce"], second["nonce"]) == (0, 1)
            node.mine(3)
            p = await backend.poll(DIGEST, p.receipt)
        finally:
            await backend.aclose()
    assert (p.state, p.receipt["tx"]) == ("final", second["hash"])


# --- reorg ---------------------------------------------------------------------------------


async def test_a_reorg_sends_the_anchor_back_to_pending_and_the_same_digest_again(
    tmp_path: Path, key: AnchorKey
) -> None:
    with running_anvil(tmp_path, block_time=None) as node:  # automine: one block per tx
        node.fund(key.address)
        backend = EvmBackend(config(node), key)
        try:
            p = await backend.submit(DIGEST, 5)
            node.wait_for_receipt(hashes(p.receipt)[-1])
            p = await backend.poll(DIGEST, p.receipt)
            assert p.state == "included"
            before = dict(p.receipt)
            node.rpc("anvil_reorg", 1, [])  # the block holding the anchor is replaced
            assert node.rpc("eth_getTransactionReceipt", before["tx"]) is None
            p = await backend.poll(DIGEST, p.receipt)
            assert p.state == "pending"
            assert p.error is not None and "left the chain" in p.error
            assert "tx" not in p.receipt
            node.wait_for_receipt(before["tx"])  # automine takes the re-sent transaction
            p = await backend.poll(DIGEST, p.receipt)
            assert p.state == "included"
            node.mine(2)
            p = await backend.poll(DIGEST, p.receipt)
        finally:
            await backend.aclose()
    assert p.state == "final"
    assert p.receipt["tx"] == before["tx"]  # the same transaction, the same digest
    assert p.receipt["block_hash"] != before["block_hash"]
    assert hashes(p.receipt) == [before["tx"]]


async def test_a_sink_that_reverts_spends_no_more_until_the_config_changes(
    tmp_path: Path, key: AnchorKey
) -> None:
    with running_anvil(tmp_path, block_time=None) as node:
        node.fund(key.address)
        node.rpc("anvil_setCode", DEAD, "0x60006000fd")  # PUSH1 0 PUSH1 0 REVERT
        bad = EvmBackend(config(node, to=DEAD, gas_limit=30_000), key)
        try:
            p = await bad.submit(DIGEST, 8)
            node.wait_for_receipt(hashes(p.receipt)[-1])
            for _ in range(2):  # refused each time, and nothing more is sent
                with pytest.raises(LedgerRejected, match=f"{DEAD} runs code that reverted"):
                    await bad.poll(DIGEST, p.receipt)
            assert len(node.transactions_from(key.address)) == 1
        finally:
            await bad.aclose()
        fixed = EvmBackend(config(node, gas_limit=30_000), key)  # `to` removed: a self-send
        try:
            p = await fixed.poll(DIGEST, p.receipt)
            assert p.state == "pending"
            assert p.error is not None and "failed (status 0)" in p.error
            node.wait_for_receipt(hashes(p.receipt)[-1])
            p = await fixed.poll(DIGEST, p.receipt)
        finally:
            await fixed.aclose()
        txs = node.transactions_from(key.address)
    assert p.state == "included"
    assert p.receipt["to"] == key.address
    assert [t["to"].lower() for t in txs] == [DEAD.lower(), key.address.lower()]
    assert p.receipt["tx"] == txs[1]["hash"]


async def test_an_unreadable_stored_receipt_is_an_anchor_error(
    anvil: AnvilNode, key: AnchorKey
) -> None:
    backend = EvmBackend(config(anvil), key)
    try:
        with pytest.raises(LedgerRejected, match="stored receipt is unreadable"):
            await backend.poll(DIGEST, {"sent": [{"hash": "0x" + "00" * 32, "nonce": "x"}]})
    finally:
        await backend.aclose()
