"""Which ledger backends a configuration asks for."""

from __future__ import annotations

from ..config import GatewayConfig
from .backend import AnchorBackend
from .evm import build_evm_backends
from .local import LocalJournal
from .rfc3161 import build_rfc3161_backends

__all__ = ["build_backends"]


def build_backends(config: GatewayConfig) -> list[AnchorBackend]:
    backends: list[AnchorBackend] = []
    if config.anchor.local:
        backends.append(LocalJournal(config.anchor_journal_path))
    backends.extend(build_rfc3161_backends(config))
    backends.extend(build_evm_backends(config))
    return backends
