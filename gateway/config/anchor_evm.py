"""``[[anchor.evm]]`` tables: Ethereum JSON-RPC ledgers that checkpoints are anchored to.

One table per chain::

    [[anchor.evm]]
    name = "besu-regional"                 # anchors are labelled "evm:besu-regional"
    chain_id = 1337                        # EIP-155 id; an endpoint on another chain is refused
    rpc = ["http://10.0.0.5:8545", "http://10.0.0.6:8545"]   # tried in order (failover)
    key_file = "anchor.key"                # secp256k1 key from `gateway init --anchor-key`
    token_file = "/etc/riverseal/rpc-token" # optional: Authorization: Bearer (a secret)
    fees = "legacy"                        # free-gas Besu/Quorum: gasPrice = gas_price_gwei (0)
    finality = "confirmations"             # QBFT/IBFT 2.0 are final in their block
    confirmations = 1

Limits are the documented defaults below; fees are in gwei (10⁹ wei).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from gateway.toml_table import Table, check_unique, positive

from ..errors import ConfigError
from ..secrets import SecretReader
from .urls import url_problem

__all__ = ["EVM_FEE_MODES", "EVM_FINALITY", "EvmAnchorConfig", "parse_evm_anchors"]

EVM_FEE_MODES = ("eip1559", "legacy")
EVM_FINALITY = ("auto", "finalized", "confirmations")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


@dataclass(frozen=True)
class EvmAnchorConfig:
    name: str
    """This ledger's label; its anchors are stored and exported as backend ``evm:<name>``."""
    chain_id: int
    """EIP-155 chain id. Every endpoint is asked ``eth_chainId`` and refused if it differs."""
    rpc: tuple[str, ...]
    """JSON-RPC endpoints (http/https), tried in order; the first that answers is kept."""
    key_file: Path = Path("anchor.key")
    """The anchoring key, relative to the config file."""
    to: str | None = None
    """Where anchor transactions go; unset: to the anchoring address itself (a self-send)."""
    fees: str = "eip1559"
    """``eip1559`` (type-2 transactions) or ``legacy`` (gasPrice; free-gas networks)."""
    max_fee_gwei: float = 50.0
    """Cap on maxFeePerGas (EIP-1559) or gasPrice (legacy), replacements included."""
    max_priority_fee_gwei: float = 2.0
    """Cap on maxPriorityFeePerGas."""
    gas_price_gwei: float = 0.0
    """Legacy only: the gasPrice sent (0 on free-gas permissioned networks)."""
    gas_limit: int | None = None
    """Gas limit per anchor; unset: eth_estimateGas plus 10 %."""
    finality: str = "auto"
    """``finalized`` (the block tag), ``confirmations`` (count), or ``auto``: the tag if
    the node has it, else confirmations."""
    confirmations: int = 12
    """Blocks that make an anchor final when counting (1: its own block, e.g. QBFT)."""
    replace_after_seconds: float = 180.0
    """A transaction not in a block after this long is replaced with higher fees."""
    fee_bump_percent: float = 12.5
    """How much a replacement raises each fee (nodes want at least 10 %)."""
    timeout_seconds: float = 10.0
    """Per JSON-RPC request, before the next endpoint is tried."""
    poll_seconds: float = 5.0
    """How often an anchor in flight is looked at (about the chain's block time)."""
    token: str | None = field(default=None, repr=False)
    """Sent to every endpoint as ``Authorization: Bearer``; from ``token``, ``token_file``,
    ``token_env`` or ``token_credential`` (gateway/secrets.py); never shown."""

    @property
    def backend(self) -> str:
        return f"evm:{self.name}"


def _parse_one(t: Table, secrets: SecretReader) -> EvmAnchorConfig:
    d = EvmAnchorConfig("", 1, ())
    name = t.get("name", str, required=True)
    t.check("name", name, lambda n: bool(_NAME.fullmatch(n)), "must be letters, digits, . _ -")
    chain_id = t.check(
        "chain_id", t.get("chain_id", int, required=True), lambda c: 0 < c < 2**63, "must be > 0"
    )
    rpc_raw = t.get("rpc", list, required=True)
    if not rpc_raw:
        t.problem("rpc", "must list at least one endpoint")
    for i, url in enumerate(rpc_raw):
        problem = url_problem(url) if isinstance(url, str) else f"{url!r} is not a URL string"
        if problem:
            t.problem(f"rpc[{i}]", problem)
    to = t.optional("to", str)
    if to is not None:
        t.check("to", to, lambda a: bool(_ADDRESS.fullmatch(a)), "is not 0x + 40 hex digits")
    fees = t.get("fees", str, d.fees)
    t.check("fees", fees, lambda f: f in EVM_FEE_MODES, f"is not one of {EVM_FEE_MODES}")
    finality = t.get("finality", str, d.finality)
    t.check("finality", finality, lambda f: f in EVM_FINALITY, f"is not one of {EVM_FINALITY}")

    def non_negative(key: str, default: float) -> float:
        return t.check(key, t.get(key, float, default), lambda x: x >= 0, "must be >= 0")

    def pos(key: str, default: float) -> float:
        return t.check(key, t.get(key, float, default), positive, "must be > 0")

    gas_limit = t.optional("gas_limit", int)
    if gas_limit is not None:
        t.check("gas_limit", gas_limit, lambda g: g >= 21_000, "must be >= 21000")
    cfg = EvmAnchorConfig(
        name=name,
        chain_id=chain_id,
        rpc=tuple(rpc_raw),
        key_file=Path(t.get("key_file", str, str(d.key_file))),
        to=to,
        fees=fees,
        max_fee_gwei=non_negative("max_fee_gwei", d.max_fee_gwei),
        max_priority_fee_gwei=non_negative("max_priority_fee_gwei", d.max_priority_fee_gwei),
        gas_price_gwei=non_negative("gas_price_gwei", d.gas_price_gwei),
        gas_limit=gas_limit,
        finality=finality,
        confirmations=t.check(
            "confirmations", t.get("confirmations", int, d.confirmations), positive, "must be > 0"
        ),
        replace_after_seconds=pos("replace_after_seconds", d.replace_after_seconds),
        fee_bump_percent=t.check(
            "fee_bump_percent",
            t.get("fee_bump_percent", float, d.fee_bump_percent),
            lambda p: 10 <= p <= 1000,
            "must be between 10 and 1000 (nodes refuse smaller bumps)",
        ),
        timeout_seconds=pos("timeout_seconds", d.timeout_seconds),
        poll_seconds=pos("poll_seconds", d.poll_seconds),
        token=secrets.read(t, "token"),
    )
    if fees == "legacy" and cfg.gas_price_gwei > cfg.max_fee_gwei:
        t.problem("gas_price_gwei", "is above max_fee_gwei")
    t.done()
    return cfg


def _guarded(t: Table, secrets: SecretReader) -> EvmAnchorConfig | None:
    try:
        return _parse_one(t, secrets)
    except ConfigError as exc:  # recorded: the other chains are still checked
        t.record(exc)
        return None


def parse_evm_anchors(
    anchor: Table, secrets: SecretReader | None = None
) -> tuple[EvmAnchorConfig, ...]:
    """The ``[[anchor.evm]]`` tables of an ``[anchor]`` section (marks ``evm`` as read)."""
    reader = secrets or SecretReader()
    parsed = (_guarded(t, reader) for t in anchor.tables("evm"))
    out = tuple(c for c in parsed if c is not None)
    check_unique([c.name for c in out], f"{anchor.where}.evm", "name", "ledgers")
    return out
