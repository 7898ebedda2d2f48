"""Anchor transactions, pure: fees, replacement bumps and signing with eth-account.

Nothing here does IO. Fees come in as numbers the node suggested and leave
as the numbers to sign, never above the configured caps. Signing is
deterministic (RFC 6979), so the same fields give the same raw transaction
and hash: a dropped transaction is re-sent from its receipt fields alone.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import LedgerRejected

if TYPE_CHECKING:
    from eth_account import Account

__all__ = [
    "AnchorTx",
    "FeePolicy",
    "Fees",
    "SignedTx",
    "bump_fees",
    "eth_account",
    "initial_fees",
    "sign_tx",
]


def eth_account() -> type[Account]:
    """eth-account's ``Account``, imported on first use (it is slow to import).

    Importing it imports py_ecc, which raises the interpreter's recursion limit
    to 100 000 for good. With that limit a deeply nested input (a JSON payload
    from a sensor node, a bundle) overflows the C stack and kills the process
    instead of raising RecursionError, so the limit is put back.
    """
    limit = sys.getrecursionlimit()
    try:
        from eth_account import Account
    finally:
        sys.setrecursionlimit(limit)
    return Account


GWEI = 10**9


@dataclass(frozen=True)
class Fees:
    """What a transaction pays per gas, in wei: EIP-1559 fields, or a legacy gasPrice."""

    max_fee: int = 0
    priority_fee: int = 0
    gas_price: int | None = None
    """Set for a legacy transaction (then the EIP-1559 fields are unused)."""

    @property
    def legacy(self) -> bool:
        return self.gas_price is not None

    def to_json(self) -> dict[str, int]:
        if self.gas_price is not None:
            return {"gas_price": self.gas_price}
        return {"max_fee": self.max_fee, "priority_fee": self.priority_fee}

    @classmethod
    def from_json(cls, obj: Any) -> Fees:
        if "gas_price" in obj:
            return cls(gas_price=int(obj["gas_price"]))
        return cls(max_fee=int(obj["max_fee"]), priority_fee=int(obj["priority_fee"]))


@dataclass(frozen=True)
class FeePolicy:
    """The configured fee rules, in wei."""

    legacy: bool
    max_fee: int
    """Cap on maxFeePerGas (EIP-1559) or gasPrice (legacy)."""
    max_priority_fee: int
    gas_price: int = 0
    """Legacy: the gasPrice to send."""
    bump_percent: float = 12.5

    @classmethod
    def from_gwei(
        cls,
        *,
        legacy: bool,
        max_fee_gwei: float,
        max_priority_fee_gwei: float,
        gas_price_gwei: float = 0.0,
        bump_percent: float = 12.5,
    ) -> FeePolicy:
        return cls(
            legacy=legacy,
            max_fee=round(max_fee_gwei * GWEI),
            max_priority_fee=round(max_priority_fee_gwei * GWEI),
            gas_price=round(gas_price_gwei * GWEI),
            bump_percent=bump_percent,
        )


def initial_fees(policy: FeePolicy, base_fee: int | None, suggested_priority: int) -> Fees:
    """Fees for a first transaction: twice the base fee plus a tip, within the caps.

    Twice the base fee survives six full blocks of base-fee rises. A base fee
    above the cap leaves ``max_fee`` at the cap; whether to send is the
    caller's decision.
    """
    if policy.legacy:
        return Fees(gas_price=min(policy.gas_price, policy.max_fee))
    if base_fee is None:
        raise LedgerRejected(
            'the chain\'s blocks have no base fee (pre-London): set fees = "legacy"'
        )
    priority = min(suggested_priority, policy.max_priority_fee)
    max_fee = min(2 * base_fee + priority, policy.max_fee)
    return Fees(max_fee=max_fee, priority_fee=min(priority, max_fee))


def bump_fees(policy: FeePolicy, old: Fees, now: Fees) -> Fees | None:
    """Fees for a replacement: each raised by the bump (or to today's fees if higher),
    within the caps. None when nothing can rise any more (at the caps, or free gas)."""
    factor = 1 + policy.bump_percent / 100

    def up(x: int) -> int:
        return math.ceil(x * factor)

    if old.gas_price is not None:
        price = min(max(up(old.gas_price), now.gas_price or 0), policy.max_fee)
        return Fees(gas_price=price) if price > old.gas_price else None
    priority = min(max(up(old.priority_fee), now.priority_fee), policy.max_priority_fee)
    max_fee = min(max(up(old.max_fee), now.max_fee), policy.max_fee)
    priority = min(priority, max_fee)
    if max_fee <= old.max_fee and priority <= old.priority_fee:
        return None
    return Fees(max_fee=max_fee, priority_fee=priority)


@dataclass(frozen=True)
class AnchorTx:
    """Everything that is signed: enough to rebuild the same raw transaction later."""

    chain_id: int
    nonce: int
    to: str
    data: bytes
    gas: int
    fees: Fees

    def fields(self) -> dict[str, Any]:
        """The transaction dict eth-account signs."""
        tx: dict[str, Any] = {
            "chainId": self.chain_id,
            "nonce": self.nonce,
            "to": self.to,
            "value": 0,
            "data": self.data,
            "gas": self.gas,
        }
        if self.fees.gas_price is not None:
            tx["gasPrice"] = self.fees.gas_price
        else:
            tx["type"] = 2
            tx["maxFeePerGas"] = self.fees.max_fee
            tx["maxPriorityFeePerGas"] = self.fees.priority_fee
        return tx


@dataclass(frozen=True)
class SignedTx:
    hash: str
    """``0x`` + 64 lower-case hex digits."""
    raw: str
    """``0x``-hex of the signed transaction, for eth_sendRawTransaction."""


def sign_tx(tx: AnchorTx, private_key: bytes) -> SignedTx:
    """Sign with eth-account; its errors become LedgerRejected here, at the boundary."""
    try:
        signed = eth_account().sign_transaction(tx.fields(), private_key)
    except (ValueError, TypeError, KeyError) as exc:
        raise LedgerRejected(f"cannot sign the anchor transaction: {exc}") from exc
    return SignedTx("0x" + bytes(signed.hash).hex(), "0x" + bytes(signed.raw_transaction).hex())
