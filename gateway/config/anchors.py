"""The ``[anchor]`` section: which ledgers checkpoints are anchored to."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.toml_table import Table, positive

from ..secrets import SecretReader
from .anchor_evm import EvmAnchorConfig, parse_evm_anchors
from .anchor_rfc3161 import Rfc3161Config, parse_rfc3161

__all__ = ["AnchorConfig", "parse_anchor"]


@dataclass(frozen=True)
class AnchorConfig:
    local: bool = True
    """Journal checkpoint digests in a local SQLite file (not independent evidence)."""
    retry_max_seconds: float = 300.0
    """Cap of the jittered exponential back-off between anchoring attempts."""
    rfc3161: tuple[Rfc3161Config, ...] = ()
    """RFC 3161 timestamp authorities, ``[[anchor.rfc3161]]`` (see anchor_rfc3161.py)."""
    evm: tuple[EvmAnchorConfig, ...] = ()
    """Ethereum JSON-RPC chains, ``[[anchor.evm]]`` (see anchor_evm.py)."""


def parse_anchor(t: Table | None, secrets: SecretReader | None = None) -> AnchorConfig:
    d = AnchorConfig()
    if t is None:
        return d
    local = True
    local_t = t.table("local")
    if local_t is not None:
        local = local_t.get("enabled", bool, True)
        local_t.done()
    retry = t.get("retry_max_seconds", float, d.retry_max_seconds)
    t.check("retry_max_seconds", retry, positive, "must be > 0")
    rfc3161 = parse_rfc3161(t)
    evm = parse_evm_anchors(t, secrets)
    t.done()
    return AnchorConfig(local=local, retry_max_seconds=retry, rfc3161=rfc3161, evm=evm)
