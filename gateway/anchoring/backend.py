"""What a ledger backend must do to anchor a checkpoint digest.

An anchor moves pending → included → final, and may fall back from
included to pending (a reorg). ``submit`` starts it (and may already finish
it); ``poll`` advances it from the receipt alone, so the state survives a
restart in the store. A receipt is stored after every call, so a backend puts
in it whatever it must remember (an EVM backend: every transaction hash it
sent). Backends raise LedgerUnavailable for what a retry may fix and
LedgerRejected for what it will not; progress made despite a problem (a
transaction signed but its broadcast unconfirmed, a replacement refused) is
returned with ``error`` set, so it is both kept and reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

__all__ = ["AnchorBackend", "AnchorProgress", "AnchorState"]

AnchorState = Literal["pending", "included", "final"]


@dataclass(frozen=True)
class AnchorProgress:
    state: AnchorState
    receipt: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    """A problem worth reporting that did not stop the progress (shown as last error)."""


class AnchorBackend(Protocol):
    """A ledger. A backend may also have ``poll_seconds`` (a float): how often the anchorer
    polls it while an anchor is in flight, if more often than the anchorer's default."""

    name: str
    """Stable label stored with each anchor ("local", "evm:<chain>", "rfc3161:<tsa>")."""

    async def submit(self, digest: bytes, checkpoint_size: int) -> AnchorProgress: ...

    async def poll(self, digest: bytes, receipt: Mapping[str, Any]) -> AnchorProgress: ...

    async def aclose(self) -> None: ...
