"""How the verifier checks an anchor receipt against a ledger the box does not control.

Step 7 of the checklist hands each non-local receipt to the first checker
that ``handles`` its backend label ("evm:<chain>", "rfc3161:<tsa>"). A
checker either returns the ledger's evidence — above all the time by which
the checkpoint demonstrably existed — or raises: ``AnchorCheckError`` when the
ledger contradicts the receipt, ``LedgerUnreachable`` when it could not be
asked. Both fail the step: an anchor is never reported as verified without a
positive answer. Checkers do their own IO (an RPC node, a root certificate
file); the rest of the verifier stays pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from .bundle import AnchorReceipt

__all__ = ["AnchorChecker", "AnchorEvidence"]


@dataclass(frozen=True)
class AnchorEvidence:
    time: datetime
    """Timezone-aware: the checkpoint existed no later than this (block time, TSA genTime)."""
    detail: str
    """What was confirmed, for the report (e.g. "tx 0x… in block 12, chain 1337, final")."""


class AnchorChecker(Protocol):
    def handles(self, backend: str) -> bool:
        """True for the backend labels this checker can confirm."""
        ...

    def check(self, anchor: AnchorReceipt) -> AnchorEvidence:
        """Confirm ``anchor`` (its digest already matches its checkpoint) or raise."""
        ...
