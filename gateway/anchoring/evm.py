"""The ``evm`` backend: a checkpoint digest in the calldata of a transaction on any
Ethereum JSON-RPC chain (Besu/QBFT, Quorum, Ethereum, L2s).

The transaction goes to the anchoring address itself (a self-send) or to a
configured sink, carries the 45-byte calldata of docs/anchor-calldata.md,
and is signed here with the box's anchoring key; the node only relays it.

Everything the backend must remember lives in the receipt the anchorer
stores after every call, so a restart picks up where it stopped:

- ``sent``: every transaction sent for this anchor, oldest first, each with
  its hash, nonce, fees and time. Any of them may be the one that is mined
  (after a fee bump the *earlier* one sometimes lands), so all are watched.
- once one is in a block: ``tx``, ``block``, ``block_hash``, ``block_time``,
  ``gas_used``; once final, ``finality`` says by which rule.

``poll`` walks the state machine:

- a receipt for any sent hash → included, or final by the ``finalized``
  block tag or by N confirmations (``finality`` in the config);
- no receipt, though the anchor was included → a reorg took it out: back to
  pending, and the same transaction is sent again (same digest, same hash);
- no receipt and the nonce was used by a transaction we did not send → a
  fresh transaction (new nonce, same digest);
- still waiting in the pool for ``replace_after_seconds`` → a replacement
  with fees raised by ``fee_bump_percent`` (never above the caps);
- unknown to the node (a restarted node lost its pool, or a broadcast was
  never confirmed) → sent again as it was.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ledger_client.evm import anchor_calldata
from ledger_client.records import format_time, parse_time

from ..config import GatewayConfig
from ..config.anchor_evm import EvmAnchorConfig
from ..errors import LedgerRejected, LedgerUnavailable
from ..keys import AnchorKey, load_anchor_key
from .backend import AnchorProgress
from .evm_rpc import EvmRpc, RpcError, quantity
from .evm_tx import AnchorTx, FeePolicy, Fees, bump_fees, initial_fees, sign_tx

__all__ = ["EvmBackend", "build_evm_backends"]

logger = logging.getLogger(__name__)

# What a node says when it already has the very transaction we send (geth, Besu, anvil).
_ALREADY_KNOWN = ("already known", "known transaction", "already imported", "already exists")
_MINED_FIELDS = ("tx", "block", "block_hash", "block_time", "gas_used", "finality")


def build_evm_backends(config: GatewayConfig) -> list[EvmBackend]:
    """One backend per ``[[anchor.evm]]`` table; key files are relative to the config file."""
    keys: dict[Path, AnchorKey] = {}
    out = []
    for c in config.anchor.evm:
        path = config.path.parent / c.key_file
        if path not in keys:
            keys[path] = load_anchor_key(path)
        out.append(EvmBackend(c, keys[path]))
    return out


class EvmBackend:
    """Anchors checkpoint digests on one EVM chain."""

    def __init__(
        self,
        config: EvmAnchorConfig,
        key: AnchorKey,
        *,
        rpc: EvmRpc | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.config = config
        self.name = config.backend
        self.poll_seconds = config.poll_seconds
        self.key = key
        self.rpc = rpc or EvmRpc(
            config.rpc, config.chain_id, timeout_s=config.timeout_seconds, token=config.token
        )
        self.policy = FeePolicy.from_gwei(
            legacy=config.fees == "legacy",
            max_fee_gwei=config.max_fee_gwei,
            max_priority_fee_gwei=config.max_priority_fee_gwei,
            gas_price_gwei=config.gas_price_gwei,
            bump_percent=config.fee_bump_percent,
        )
        self._clock = clock
        self._finality = config.finality  # "auto" settles on the first answer

    @property
    def to(self) -> str:
        return self.config.to or self.key.address

    async def aclose(self) -> None:
        await self.rpc.aclose()

    # --- submit ---------------------------------------------------------------------

    async def submit(self, digest: bytes, checkpoint_size: int) -> AnchorProgress:
        data = anchor_calldata(digest, checkpoint_size)
        gas = self.config.gas_limit or await self._estimate_gas(data)
        receipt: dict[str, Any] = {
            "chain_id": self.config.chain_id,
            "from": self.key.address,
            "to": self.to,
            "calldata": "0x" + data.hex(),
            "gas": gas,
            "sent": [],
        }
        nonce = await self._pending_nonce()
        fees = await self._current_fees()
        try:
            sent, error = await self._send(receipt, nonce, fees, first=True)
        except RpcError as exc:
            if "insufficient funds" in exc.message.lower():
                raise LedgerRejected(
                    f"the anchoring address {self.key.address} cannot pay for gas "
                    f"({exc.message}); fund it, or use a free-gas network"
                ) from exc
            raise
        receipt["sent"] = [sent]
        return AnchorProgress("pending", receipt, error=error)

    async def _estimate_gas(self, data: bytes) -> int:
        call = {"from": self.key.address, "to": self.to, "data": "0x" + data.hex()}
        estimate = quantity(await self.rpc.call("eth_estimateGas", [call]), "a gas estimate")
        return estimate + estimate // 10  # headroom for chains whose estimate moves (L2 data fees)

    async def _pending_nonce(self) -> int:
        got = await self.rpc.call("eth_getTransactionCount", [self.key.address, "pending"])
        return quantity(got, "a nonce")

    async def _mined_nonce(self) -> int:
        got = await self.rpc.call("eth_getTransactionCount", [self.key.address, "latest"])
        return quantity(got, "a nonce")

    async def _current_fees(self) -> Fees:
        if self.policy.legacy:
            return initial_fees(self.policy, None, 0)
        block = await self.rpc.call("eth_getBlockByNumber", ["latest", False])
        base_raw = block.get("baseFeePerGas") if isinstance(block, dict) else None
        base = None if base_raw is None else quantity(base_raw, "a base fee")
        try:
            tip = quantity(await self.rpc.call("eth_maxPriorityFeePerGas"), "a priority fee")
        except RpcError:  # not every node has it; the cap is then the tip
            tip = self.policy.max_priority_fee
        if base is not None and base > self.policy.max_fee:
            raise LedgerUnavailable(
                f"the base fee ({base / 1e9:.3f} gwei) is above max_fee_gwei "
                f"({self.policy.max_fee / 1e9:.3f}); waiting for it to fall"
            )
        return initial_fees(self.policy, base, tip)

    def _tx(self, receipt: Mapping[str, Any], nonce: int, fees: Fees) -> AnchorTx:
        return AnchorTx(
            chain_id=self.config.chain_id,
            nonce=nonce,
            to=str(receipt["to"]),
            data=bytes.fromhex(str(receipt["calldata"])[2:]),
            gas=int(receipt["gas"]),
            fees=fees,
        )

    async def _send(
        self, receipt: Mapping[str, Any], nonce: int, fees: Fees, *, first: bool = False
    ) -> tuple[dict[str, Any], str | None]:
        """Sign and broadcast; return the ``sent`` entry and any error worth reporting.

        A refusal (RpcError) raises: the transaction is not in any pool, so it
        is not recorded. A lost connection does not: the transaction may have
        arrived, so it is recorded and ``poll`` sends it again if the node
        does not know it.
        """
        signed = sign_tx(self._tx(receipt, nonce, fees), self.key.private_key)
        entry = {"hash": signed.hash, "nonce": nonce, **fees.to_json(), "time": self._now()}
        try:
            await self._broadcast(signed.raw)
        except LedgerUnavailable as exc:
            return entry, f"sent {signed.hash} but the node did not confirm it: {exc}"
        what = "sent" if first else "replaced with"
        logger.info("%s: %s %s (nonce %d, %s)", self.name, what, signed.hash, nonce, _fees(fees))
        return entry, None

    async def _broadcast(self, raw: str) -> None:
        try:
            await self.rpc.call("eth_sendRawTransaction", [raw])
        except RpcError as exc:
            if any(s in exc.message.lower() for s in _ALREADY_KNOWN):
                return
            raise

    def _now(self) -> str:
        return format_time(self._clock())

    # --- poll -----------------------------------------------------------------------

    async def poll(self, digest: bytes, receipt: Mapping[str, Any]) -> AnchorProgress:
        try:
            return await self._poll(receipt)
        except (KeyError, TypeError, ValueError) as exc:  # a stored receipt we cannot read
            raise LedgerRejected(f"the stored receipt is unreadable ({exc!r})") from exc

    async def _poll(self, receipt: Mapping[str, Any]) -> AnchorProgress:
        sent = list(receipt.get("sent") or [])
        if not sent:
            raise LedgerRejected("the receipt lists no transaction to watch")
        # The nonce first: a transaction mined after this call still shows its receipt below.
        mined_nonce = await self._mined_nonce()
        failed = None
        for entry in reversed(sent):
            found = await self.rpc.call("eth_getTransactionReceipt", [entry["hash"]])
            if isinstance(found, dict) and found.get("blockNumber") is not None:
                if quantity(found.get("status", "0x1"), "a status") == 1:
                    return await self._mined(receipt, entry, found)
                failed = f"{entry['hash']} failed (status 0) in block {found['blockNumber']}"
                break
        waiting = {k: v for k, v in receipt.items() if k not in _MINED_FIELDS}
        error = None
        if "tx" in receipt:
            error = f"{receipt['tx']} left the chain (reorg at block {receipt.get('block')})"
        newest = sent[-1]
        if failed is not None:
            # Only code at the recipient makes an anchor revert. Sending again to the same
            # place would spend gas for nothing, again and again: wait for the config to change.
            if str(waiting["to"]).lower() == self.to.lower():
                raise LedgerRejected(
                    f"{failed}: {self.to} runs code that reverted; set `to` to an "
                    "address without code, or remove it to send to the anchoring address"
                )
            waiting["to"] = self.to
        if failed is not None or mined_nonce > int(newest["nonce"]):
            # Our nonce is spent (by our failed transaction, or by one we did not send).
            nonce, fees = await self._pending_nonce(), await self._current_fees()
            entry, err = await self._send(waiting, nonce, fees)
            waiting["sent"] = [*sent, entry]
            why = failed or f"nonce {newest['nonce']} was used by another transaction"
            return AnchorProgress("pending", waiting, error=err or f"{why}; re-sent")
        error = await self._keep_moving(waiting, sent, error)
        return AnchorProgress("pending", waiting, error=error)

    async def _keep_moving(
        self, waiting: dict[str, Any], sent: list[dict[str, Any]], error: str | None
    ) -> str | None:
        """Nothing mined and our nonce is free: make sure a transaction is waiting, and
        replace it with higher fees when it has waited too long. Updates ``waiting``."""
        newest = sent[-1]
        nonce = int(newest["nonce"])
        known = False
        for entry in reversed(sent):
            if int(entry["nonce"]) == nonce and await self._known(entry["hash"]):
                known = True
                break
        waited_s = (self._clock() - _ns(newest["time"])) / 1e9
        if known and waited_s < self.config.replace_after_seconds:
            return error
        old = Fees.from_json(newest)
        if not known:
            try:  # the node lost it (restart, reorg) or never got it: the same bytes again
                await self._broadcast(
                    sign_tx(self._tx(waiting, nonce, old), self.key.private_key).raw
                )
                logger.info("%s: re-sent %s (nonce %d)", self.name, newest["hash"], nonce)
                return error
            except RpcError as exc:
                logger.warning("%s: re-sending %s refused: %s", self.name, newest["hash"], exc)
        now = await self._current_fees()
        fees = bump_fees(self.policy, old, now)
        if fees is None:
            return (
                f"{newest['hash']} has waited {waited_s:.0f} s at the fee caps "
                f"({_fees(old)}); raise max_fee_gwei to replace it"
            )
        try:
            entry, err = await self._send(waiting, nonce, fees)
        except RpcError as exc:
            return f"replacing {newest['hash']} was refused: {exc.message}"
        waiting["sent"] = [*sent, entry]
        return err or error

    async def _known(self, tx_hash: str) -> bool:
        found = await self.rpc.call("eth_getTransactionByHash", [tx_hash])
        return isinstance(found, dict)

    async def _mined(
        self, receipt: Mapping[str, Any], entry: Mapping[str, Any], found: Mapping[str, Any]
    ) -> AnchorProgress:
        number = quantity(found.get("blockNumber"), "a block number")
        block_hash = str(found.get("blockHash"))
        out = dict(receipt)
        if receipt.get("tx") != entry["hash"] or receipt.get("block_hash") != block_hash:
            block = await self.rpc.call("eth_getBlockByNumber", [hex(number), False])
            if not isinstance(block, dict) or block.get("hash") != block_hash:
                raise LedgerUnavailable(f"block {number} changed while it was read")
            if receipt.get("block_hash") not in (None, block_hash):
                logger.warning(
                    "%s: %s moved from block %s to %d (reorg)",
                    self.name,
                    entry["hash"],
                    receipt.get("block"),
                    number,
                )
            ts = quantity(block.get("timestamp"), "a timestamp")
            out.update(
                tx=entry["hash"],
                block=number,
                block_hash=block_hash,
                block_time=format_time(ts * 1_000_000_000),
                gas_used=quantity(found.get("gasUsed"), "gasUsed"),
            )
            out.pop("finality", None)
        rule = await self._final_by(number)
        if rule is None:
            out.pop("finality", None)
            return AnchorProgress("included", out)
        out["finality"] = rule
        if rule == "confirmations":
            out["confirmations"] = self.config.confirmations
        return AnchorProgress("final", out)

    async def _final_by(self, number: int) -> str | None:
        """The rule by which block ``number`` is final, or None if it is not yet."""
        if self._finality in ("auto", "finalized"):
            try:
                fin = await self.rpc.call("eth_getBlockByNumber", ["finalized", False])
            except RpcError as exc:
                if self._finality == "finalized":
                    raise LedgerRejected(
                        f"the node has no 'finalized' block ({exc.message}); "
                        'set finality = "confirmations"'
                    ) from exc
                fin = None
            if isinstance(fin, dict):
                self._finality = "finalized"
                return "finalized" if number <= quantity(fin.get("number"), "a number") else None
            if self._finality == "finalized":
                raise LedgerUnavailable("the node has no finalized block yet")
            logger.info("%s: no 'finalized' block tag; counting confirmations", self.name)
            self._finality = "confirmations"
        head = quantity(await self.rpc.call("eth_blockNumber"), "a block number")
        return "confirmations" if head - number + 1 >= self.config.confirmations else None


def _ns(text: str) -> int:
    dt = parse_time(text)
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


def _fees(fees: Fees) -> str:
    if fees.gas_price is not None:
        return f"gasPrice {fees.gas_price / 1e9:g} gwei"
    return f"maxFee {fees.max_fee / 1e9:g} gwei, tip {fees.priority_fee / 1e9:g} gwei"
