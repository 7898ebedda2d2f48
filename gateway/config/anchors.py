"""The ``[anchor]`` section: which ledgers checkpoints are anchored to."""

from __future__ import annotations

from dataclasses import dataclass

from .table import Table, positive

__all__ = ["AnchorConfig", "parse_anchor"]


@dataclass(frozen=True)
class AnchorConfig:
    local: bool = True
    """Journal checkpoint digests in a local SQLite file (not independent evidence)."""
    retry_max_seconds: float = 300.0
    """Cap of the jittered exponential back-off between anchoring attempts."""


def parse_anchor(t: Table | None) -> AnchorConfig:
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
    t.done()
    return AnchorConfig(local=local, retry_max_seconds=retry)
