"""EVM anchors: the calldata a station sends, and the check against the regulator's own node.

The calldata format (docs/anchor-calldata.md) is defined here, once, and the
gateway builds its transactions with it::

    offset  size  content
    0       4     magic "RVSL" (0x52 0x56 0x53 0x4c)
    4       1     version, 0x01
    5       32    the checkpoint digest (SHA-256 of the checkpoint body)
    37      8     the checkpoint's tree size, unsigned big-endian

``EvmChecker`` is the AnchorChecker for ``evm:<name>`` receipts. It asks the
JSON-RPC node(s) named with ``ledger-verify --rpc`` — the regulator's own, so
what the node says about a transaction (its sender, its block) is taken as
true — and confirms that the transaction exists on the receipt's chain, is
final, was sent by an address the trust file registers for that chain
(``evm-sender <chain-id> <address>``), and carries exactly the calldata for
the anchored checkpoint. The block's timestamp is the time the checkpoint
existed by.

Finality: if the node reports a ``finalized`` block, the transaction's block
must be at or below it. If it does not (e.g. a QBFT network, or a node that
predates the tag), the transaction needs the number of confirmations set by
the trust file (``evm-confirmations <chain-id> <n>``) or, without that line,
the number the receipt states (at least 1; 1 means the including block).

httpx is imported only when a check runs: the offline verifier needs PyNaCl
alone (install ``riverseal[online]`` for ``--rpc``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .anchors import AnchorEvidence
from .bundle import AnchorReceipt
from .errors import AnchorCheckError, LedgerUnreachable, MalformedError
from .trust import TrustList

if TYPE_CHECKING:
    import httpx

__all__ = [
    "CALLDATA_MAGIC",
    "CALLDATA_SIZE",
    "CALLDATA_VERSION",
    "EvmChecker",
    "MalformedCalldata",
    "anchor_calldata",
    "parse_anchor_calldata",
]

CALLDATA_MAGIC = b"RVSL"
CALLDATA_VERSION = 1
CALLDATA_SIZE = 45
_DIGEST_SIZE = 32

_TX_HASH = re.compile(r"0x[0-9a-fA-F]{64}")


class MalformedCalldata(MalformedError):
    """Bytes that are not riverseal anchor calldata of a version we read."""


def anchor_calldata(digest: bytes, tree_size: int) -> bytes:
    """The calldata that anchors a checkpoint with this digest and tree size."""
    if len(digest) != _DIGEST_SIZE:
        raise MalformedCalldata(f"a checkpoint digest is 32 bytes, not {len(digest)}")
    if not 0 <= tree_size < 2**64:
        raise MalformedCalldata(f"tree size {tree_size} does not fit in 8 bytes")
    return CALLDATA_MAGIC + bytes([CALLDATA_VERSION]) + digest + tree_size.to_bytes(8, "big")


def parse_anchor_calldata(data: bytes) -> tuple[bytes, int]:
    """(digest, tree size) from anchor calldata; raises MalformedCalldata."""
    if not data.startswith(CALLDATA_MAGIC):
        raise MalformedCalldata("calldata does not start with the riverseal magic 'RVSL'")
    if len(data) < 5 or data[4] != CALLDATA_VERSION:
        version = data[4] if len(data) > 4 else None
        raise MalformedCalldata(f"riverseal calldata version {version} is not one this reads (1)")
    if len(data) != CALLDATA_SIZE:
        raise MalformedCalldata(f"riverseal calldata v1 is {CALLDATA_SIZE} bytes, not {len(data)}")
    return data[5:37], int.from_bytes(data[37:45], "big")


def _hex_bytes(text: Any, what: str) -> bytes:
    if not isinstance(text, str) or not text.startswith("0x"):
        raise LedgerUnreachable(f"the node answered {what} that is not 0x-hex: {text!r}")
    try:
        return bytes.fromhex(text[2:])
    except ValueError as exc:
        raise LedgerUnreachable(f"the node answered {what} that is not 0x-hex: {text!r}") from exc


def _quantity(value: Any, what: str) -> int:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise LedgerUnreachable(f"the node answered {what} that is not a 0x quantity: {value!r}")
    try:
        return int(value, 16)
    except ValueError as exc:
        raise LedgerUnreachable(
            f"the node answered {what} that is not a quantity: {value!r}"
        ) from exc


class _ReplyError(LedgerUnreachable):
    """The node answered with a JSON-RPC error object."""

    def __init__(self, url: str, method: str, code: Any, message: Any) -> None:
        super().__init__(f"{url}: {method} failed: {message} (code {code})")
        self.code = code


class _Node:
    """One JSON-RPC endpoint, asked synchronously over one httpx client."""

    def __init__(self, client: httpx.Client, url: str) -> None:
        self.client = client
        self.url = url
        self._id = 0

    def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        import httpx

        self._id += 1
        body = {"jsonrpc": "2.0", "id": self._id, "method": method, "params": list(params)}
        try:
            reply = self.client.post(self.url, json=body)
        except httpx.HTTPError as exc:
            raise LedgerUnreachable(f"{self.url}: {method}: {exc or type(exc).__name__}") from exc
        if reply.status_code != 200:
            raise LedgerUnreachable(f"{self.url}: {method}: HTTP {reply.status_code}")
        try:
            doc = reply.json()
        except ValueError as exc:
            raise LedgerUnreachable(f"{self.url}: {method}: the reply is not JSON") from exc
        if not isinstance(doc, dict) or doc.get("id") != self._id:
            raise LedgerUnreachable(f"{self.url}: {method}: not a JSON-RPC reply to this request")
        error = doc.get("error")
        if error is not None:
            err = error if isinstance(error, dict) else {}
            raise _ReplyError(self.url, method, err.get("code"), err.get("message", error))
        return doc.get("result")


class EvmChecker:
    """Confirms ``evm:<name>`` receipts against the regulator's own JSON-RPC node(s).

    Args:
        urls: one node per chain the bundle anchors to; each receipt is checked
            on the node whose ``eth_chainId`` equals the receipt's ``chain_id``.
        trust: the trust file; its ``evm-sender`` lines are the addresses that
            may anchor for each chain.
        timeout_s: per request.
        transport: an httpx transport (tests only; default: the network).
    """

    def __init__(
        self,
        urls: Sequence[str],
        trust: TrustList,
        *,
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise MalformedError(f"--rpc {url!r} is not an http:// or https:// URL")
        self.urls = tuple(urls)
        self.trust = trust
        self.timeout_s = timeout_s
        self._transport = transport
        self._chains: dict[str, int] = {}

    def handles(self, backend: str) -> bool:
        return backend == "evm" or backend.startswith("evm:")

    def check(self, anchor: AnchorReceipt) -> AnchorEvidence:
        import httpx

        receipt = anchor.receipt
        tx = receipt.get("tx")
        if not isinstance(tx, str) or not _TX_HASH.fullmatch(tx):
            raise AnchorCheckError(f"the receipt names no transaction hash (tx: {tx!r})")
        chain = receipt.get("chain_id")
        if not isinstance(chain, int) or isinstance(chain, bool) or chain <= 0:
            raise AnchorCheckError(f"tx {tx}: the receipt has no valid chain_id ({chain!r})")
        with httpx.Client(timeout=self.timeout_s, transport=self._transport) as client:
            node = self._node_for(client, chain, tx)
            return self._check_on(node, anchor, tx.lower(), chain)

    def _node_for(self, client: httpx.Client, chain: int, tx: str) -> _Node:
        unreachable: list[str] = []
        for url in self.urls:
            node = _Node(client, url)
            if url not in self._chains:
                try:
                    self._chains[url] = _quantity(node.call("eth_chainId"), "a chain id")
                except LedgerUnreachable as exc:
                    unreachable.append(str(exc))
                    continue
            if self._chains[url] == chain:
                return node
        if unreachable:  # one of them may serve the chain: nothing can be decided
            raise LedgerUnreachable(
                f"tx {tx}: no --rpc node for chain {chain} answered: " + "; ".join(unreachable)
            )
        served = ", ".join(f"{u} serves chain {c}" for u, c in self._chains.items())
        raise AnchorCheckError(
            f"tx {tx}: the receipt is for chain {chain}, but no --rpc node serves it ({served})"
        )

    def _check_on(self, node: _Node, anchor: AnchorReceipt, tx: str, chain: int) -> AnchorEvidence:
        senders = self.trust.evm_senders_for(chain)
        if not senders:
            raise AnchorCheckError(
                f"tx {tx}: the trust file registers no anchoring address for chain {chain} "
                f"(a line: evm-sender {chain} <address>)"
            )
        found = node.call("eth_getTransactionByHash", [tx])
        if found is None:
            raise AnchorCheckError(f"tx {tx}: no such transaction on the node (chain {chain})")
        if not isinstance(found, dict):
            raise LedgerUnreachable(f"{node.url}: eth_getTransactionByHash answered {found!r}")
        if found.get("blockNumber") is None:
            raise AnchorCheckError(
                f"tx {tx}: the transaction is not in a block yet (chain {chain})"
            )
        tx_chain = found.get("chainId")
        if tx_chain is not None and _quantity(tx_chain, "a chainId") != chain:
            raise AnchorCheckError(
                f"tx {tx}: signed for chain {_quantity(tx_chain, 'a chainId')}, "
                f"not the receipt's chain {chain}"
            )
        self._check_calldata(anchor, tx, _hex_bytes(found.get("input"), "calldata"))
        sender = str(found.get("from", "")).lower()
        if sender not in senders:
            raise AnchorCheckError(
                f"tx {tx}: sent by {sender}, which the trust file does not register "
                f"for chain {chain} (registered: {', '.join(sorted(senders))})"
            )
        mined = node.call("eth_getTransactionReceipt", [tx])
        if not isinstance(mined, dict):
            raise AnchorCheckError(f"tx {tx}: the node has no receipt for it (chain {chain})")
        if _quantity(mined.get("status", "0x1"), "a status") != 1:
            raise AnchorCheckError(f"tx {tx}: the transaction failed (status 0) on chain {chain}")
        number = _quantity(mined.get("blockNumber"), "a block number")
        finality = self._finality(node, anchor.receipt, tx, chain, number)
        block = node.call("eth_getBlockByNumber", [hex(number), False])
        if not isinstance(block, dict):
            raise LedgerUnreachable(f"{node.url}: block {number} is missing")
        if str(block.get("hash", "")).lower() != str(mined.get("blockHash", "")).lower():
            raise LedgerUnreachable(f"{node.url}: block {number} changed while it was read")
        when = datetime.fromtimestamp(_quantity(block.get("timestamp"), "a timestamp"), UTC)
        return AnchorEvidence(
            when, f"tx {tx} in block {number} of chain {chain}, sent by {sender}, {finality}"
        )

    @staticmethod
    def _check_calldata(anchor: AnchorReceipt, tx: str, data: bytes) -> None:
        expected = anchor_calldata(anchor.digest, anchor.checkpoint)
        if data == expected:
            return
        try:
            digest, size = parse_anchor_calldata(data)
        except MalformedCalldata as exc:
            raise AnchorCheckError(f"tx {tx}: the calldata is not an anchor: {exc}") from exc
        raise AnchorCheckError(
            f"tx {tx}: the calldata anchors digest {digest.hex()} at tree size {size}, "
            f"not this checkpoint ({anchor.digest.hex()} at size {anchor.checkpoint})"
        )

    def _finality(
        self, node: _Node, receipt: Mapping[str, Any], tx: str, chain: int, number: int
    ) -> str:
        try:
            fin = node.call("eth_getBlockByNumber", ["finalized", False])
        except _ReplyError:
            fin = None  # the node has no such tag: count confirmations instead
        if isinstance(fin, dict):
            final = _quantity(fin.get("number"), "a block number")
            if number > final:
                raise AnchorCheckError(
                    f"tx {tx}: block {number} is not final yet (the node's finalized "
                    f"block on chain {chain} is {final})"
                )
            return f"final (finalized block {final})"
        need = self.trust.evm_confirmations_for(chain)
        source = "the trust file"
        if need is None:
            stated = receipt.get("confirmations", 1)
            need = stated if isinstance(stated, int) and not isinstance(stated, bool) else 1
            need, source = max(need, 1), "the receipt"
        head = _quantity(node.call("eth_blockNumber"), "a block number")
        have = head - number + 1
        if have < need:
            raise AnchorCheckError(
                f"tx {tx}: {have} confirmation(s) on chain {chain}, {need} needed "
                f"(as {source} says; the node reports no finalized block)"
            )
        return f"final ({have} confirmations, {need} needed as {source} says)"
