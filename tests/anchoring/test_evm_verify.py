"""The verifier's EVM checker against real anvil nodes: what passes, and each way a
receipt fails — always naming the receipt's transaction and the reason.

A bundle with real final anchors is made once per module: a log, the anchorer
and the evm backend on the session anvil node, then ``export_bundle``. Each
test edits what the regulator would be handed (the receipt or the trust file).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.anchoring.anchorer import Anchorer
from gateway.anchoring.evm import EvmBackend
from gateway.anchoring.evm_tx import AnchorTx, Fees, sign_tx
from gateway.config.anchor_evm import EvmAnchorConfig
from gateway.export import export_bundle
from gateway.keys import AnchorKey, create_anchor_key, create_device_key
from gateway.log import Log
from gateway.pipeline import Reading, Value
from gateway.store import Store
from ledger_client.bundle import AnchorReceipt, Bundle
from ledger_client.cli import main as ledger_verify
from ledger_client.evm import EvmChecker, anchor_calldata
from ledger_client.trust import TrustList, parse_trust
from ledger_client.verify import VERIFIED_STATUS, Report, verify_bundle
from tests.servers.anvil_node import AnvilNode, running_anvil

NAME = "evm:anvil"


@dataclass(frozen=True)
class Anchored:
    bundle: Bundle
    key: AnchorKey
    vkey: str
    node: AnvilNode

    def trust(self, *lines: str) -> TrustList:
        return parse_trust("\n".join([f"key {self.vkey}", *lines]) + "\n")

    @property
    def good_trust(self) -> TrustList:
        return self.trust(f"evm-sender {self.node.chain_id} {self.key.address}")

    def evm(self) -> list[AnchorReceipt]:
        return [a for a in self.bundle.anchors if a.backend == NAME]

    def with_receipt(self, **changes: Any) -> Bundle:
        """The bundle with its first evm receipt edited."""
        first = self.evm()[0]
        edited = dataclasses.replace(first, receipt={**first.receipt, **changes})
        return dataclasses.replace(
            self.bundle, anchors=tuple(edited if a is first else a for a in self.bundle.anchors)
        )


async def _anchor(tmp: Path, node: AnvilNode, checkpoints: int, **settings: Any) -> Anchored:
    """Log ``checkpoints`` checkpoints, each anchored until final, and export them."""
    device = create_device_key(tmp / "device.key")
    key = create_anchor_key(tmp / "anchor.key")
    node.fund(key.address)
    cfg = EvmAnchorConfig(name="anvil", chain_id=node.chain_id, rpc=(node.url,), **settings)
    backend = EvmBackend(cfg, key)
    async with Store(tmp / "log.sqlite") as store:
        log = Log(store, device)
        await log.open()
        anchorer = Anchorer(store, [backend])
        for i in range(checkpoints):
            now = time.time_ns()
            readings = [
                Reading("ph-1", (Value("pH", 7.0 + i / 10, "pH"),), now + j) for j in range(3)
            ]
            await log.append(readings, checkpoint=True)
            deadline = time.monotonic() + 20
            while anchorer.status[NAME].last_final != log.size:
                assert time.monotonic() < deadline, anchorer.status[NAME]
                await asyncio.sleep(0.1)
                await anchorer.step()
        bundle = await export_bundle(log, seal=False)
    await backend.aclose()
    return Anchored(bundle, key, device.vkey, node)


@pytest.fixture(scope="module")
def anchored(anvil: AnvilNode, tmp_path_factory: pytest.TempPathFactory) -> Anchored:
    return asyncio.run(_anchor(tmp_path_factory.mktemp("anchored"), anvil, 2))


def verify(bundle: Bundle, trust: TrustList, checker: EvmChecker) -> Report:
    return verify_bundle(bundle, trust, now=datetime.now(UTC), anchor_checkers=[checker])


def only_failure(report: Report) -> str:
    assert not report.ok
    (failure,) = report.failures
    assert failure.check == "anchors"
    return str(failure)


def test_final_anchors_verify_and_date_the_entries_by_their_blocks(anchored: Anchored) -> None:
    node = anchored.node
    report = verify(
        anchored.bundle, anchored.good_trust, EvmChecker([node.url], anchored.good_trust)
    )
    assert report.ok, [str(f) for f in report.failures]
    results = [a for a in report.anchors if a.backend == NAME]
    assert len(results) == 2
    for result, receipt in zip(results, anchored.evm(), strict=True):
        assert result.status == VERIFIED_STATUS
        block = node.rpc("eth_getBlockByNumber", hex(receipt.receipt["block"]), False)
        when = datetime.fromtimestamp(int(block["timestamp"], 16), UTC)
        assert result.time == when.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
        assert receipt.receipt["tx"] in result.detail
        assert "finalized" in result.detail
    assert report.recorded_by


def test_calldata_for_another_digest_fails_naming_the_receipt(anchored: Anchored) -> None:
    node, key = anchored.node, anchored.key
    # The registered sender anchored something else; the receipt points at that transaction.
    nonce = int(node.rpc("eth_getTransactionCount", key.address, "pending"), 16)
    other = hashlib.sha256(b"not this checkpoint").digest()
    size = anchored.evm()[0].checkpoint
    tx = AnchorTx(
        node.chain_id,
        nonce,
        key.address,
        anchor_calldata(other, size),
        30_000,
        Fees(max_fee=10**11, priority_fee=10**9),
    )
    signed = sign_tx(tx, key.private_key)
    node.rpc("eth_sendRawTransaction", signed.raw)
    node.wait_for_block(node.block_number() + 4)
    checker = EvmChecker([node.url], anchored.good_trust)
    report = verify(anchored.with_receipt(tx=signed.hash), anchored.good_trust, checker)
    failure = only_failure(report)
    assert signed.hash in failure
    assert f"the calldata anchors digest {other.hex()} at tree size {size}" in failure


def test_a_sender_not_registered_fails_naming_the_receipt(anchored: Anchored) -> None:
    stranger = "0x" + "12" * 20
    trust = anchored.trust(f"evm-sender {anchored.node.chain_id} {stranger}")
    report = verify(anchored.bundle, trust, EvmChecker([anchored.node.url], trust))
    assert not report.ok
    assert len(report.failures) == 2  # both receipts
    for failure, receipt in zip(report.failures, anchored.evm(), strict=True):
        assert receipt.receipt["tx"] in str(failure)
        assert f"sent by {anchored.key.address.lower()}, which the trust file does not" in str(
            failure
        )


def test_a_chain_without_a_registered_sender_fails(anchored: Anchored) -> None:
    trust = anchored.trust(f"evm-sender 1 {anchored.key.address}")
    report = verify(anchored.bundle, trust, EvmChecker([anchored.node.url], trust))
    assert not report.ok
    assert "registers no anchoring address for chain 31337" in str(report.failures[0])


def test_a_transaction_missing_on_the_node_fails(anchored: Anchored) -> None:
    missing = "0x" + "ab" * 32
    checker = EvmChecker([anchored.node.url], anchored.good_trust)
    failure = only_failure(verify(anchored.with_receipt(tx=missing), anchored.good_trust, checker))
    assert f"tx {missing}: no such transaction on the node (chain 31337)" in failure


def test_a_receipt_for_another_chain_fails(anchored: Anchored, tmp_path: Path) -> None:
    checker = EvmChecker([anchored.node.url], anchored.good_trust)
    tx = anchored.evm()[0].receipt["tx"]
    failure = only_failure(verify(anchored.with_receipt(chain_id=1), anchored.good_trust, checker))
    assert f"tx {tx}: the receipt is for chain 1, but no --rpc node serves it" in failure
    # ...and the other way round: the regulator's node is on another chain.
    with running_anvil(tmp_path, chain_id=5, block_time=None) as other:
        checker = EvmChecker([other.url], anchored.good_trust)
        report = verify(anchored.bundle, anchored.good_trust, checker)
    assert not report.ok
    assert f"{other.url} serves chain 5" in str(report.failures[0])


def test_an_unreachable_node_is_no_verdict(anchored: Anchored) -> None:
    checker = EvmChecker(["http://127.0.0.1:9"], anchored.good_trust, timeout_s=2)
    report = verify(anchored.bundle, anchored.good_trust, checker)
    assert not report.ok
    assert "no --rpc node for chain 31337 answered" in str(report.failures[0])


def test_an_anchor_not_final_yet_fails(tmp_path: Path) -> None:
    # With 32 slots an epoch, anvil's finalized block trails the head by 64 blocks.
    with running_anvil(tmp_path / "node", block_time=None, slots_in_an_epoch=32) as node:
        # The station counts 1 confirmation as final; the regulator's node disagrees.
        anchored = asyncio.run(
            _anchor(tmp_path, node, 1, finality="confirmations", confirmations=1)
        )
        checker = EvmChecker([node.url], anchored.good_trust)
        failure = only_failure(verify(anchored.bundle, anchored.good_trust, checker))
    assert anchored.evm()[0].receipt["tx"] in failure
    assert "is not final yet (the node's finalized block on chain 31337 is 0)" in failure


class NoFinalizedTag(httpx.BaseTransport):
    """The real anvil node, except that it answers the ``finalized`` tag as a node
    without it does (a QBFT network, or a node from before the Merge). No such
    node runs here; everything else is anvil's own answer."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body["method"] == "eth_getBlockByNumber" and body["params"][0] == "finalized":
            error = {"code": -39001, "message": "Unknown block"}
            return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "error": error})
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def no_finalized_tag() -> Iterator[NoFinalizedTag]:
    transport = NoFinalizedTag()
    yield transport
    transport.close()


def test_without_a_finalized_tag_confirmations_decide(
    anchored: Anchored, no_finalized_tag: NoFinalizedTag
) -> None:
    node = anchored.node
    chain = node.chain_id
    sender = f"evm-sender {chain} {anchored.key.address}"
    # The receipt states no confirmations (it was final by the tag): at least 1 is needed.
    trust = anchored.trust(sender)
    checker = EvmChecker([node.url], trust, transport=no_finalized_tag)
    report = verify(anchored.bundle, trust, checker)
    assert report.ok, [str(f) for f in report.failures]
    assert "as the receipt says" in report.anchors[-1].detail
    # The regulator's own rule wins over the receipt.
    strict = anchored.trust(sender, f"evm-confirmations {chain} 100000")
    checker = EvmChecker([node.url], strict, transport=no_finalized_tag)
    report = verify(anchored.bundle, strict, checker)
    assert not report.ok
    assert "100000 needed (as the trust file says" in str(report.failures[0])


def test_ledger_verify_rpc_on_the_command_line(
    anchored: Anchored, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bundle.json"
    path.write_text(anchored.bundle.dumps())
    trust = tmp_path / "trust.txt"
    trust.write_text(f"key {anchored.vkey}\nevm-sender 31337 {anchored.key.address}\n")
    url = anchored.node.url
    assert ledger_verify([str(path), "--rpc", url, "--trust", str(trust)]) == 0
    out = capsys.readouterr().out
    assert f"checkpoint {anchored.evm()[0].checkpoint}, {NAME} (final): verified at" in out
    assert ledger_verify([str(path), "--rpc", url]) == 2
    assert "--rpc needs --trust" in capsys.readouterr().err
    missing = "0x" + "cd" * 32
    path.write_text(anchored.with_receipt(tx=missing).dumps())
    assert ledger_verify([str(path), "--rpc", url, "--trust", str(trust)]) == 1
    out = capsys.readouterr().out
    assert f"{NAME} anchor: tx {missing}: no such transaction on the node" in out
