"""``[[witnesses]]`` tables: C2SP tlog-witnesses asked to cosign each checkpoint.

::

    [[witnesses]]
    url = "https://witness.regulator.example/riverseal"   # the submission prefix
    vkey = "witness.regulator.example/w1+1a2b3c4d+BH..."  # its key, type 0x04
    timeout_s = 10.0
    retry_max_seconds = 300.0

After each checkpoint is signed the box POSTs ``<url>/add-checkpoint`` with a
consistency proof from the last size that witness cosigned, checks the
cosignature against ``vkey`` and keeps it with the checkpoint
(gateway/witnessing.py, docs/witness.md). A witness that is down or refuses
never holds up ingest; it is retried with capped, jittered back-off.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import ConfigError
from gateway.toml_table import Table, check_unique, positive
from ledger_client.errors import LedgerClientError
from ledger_client.witness import WitnessKey

__all__ = ["WitnessConfig", "parse_witnesses"]


@dataclass(frozen=True)
class WitnessConfig:
    url: str
    """The witness's submission prefix; ``/add-checkpoint`` is appended."""
    vkey: WitnessKey
    """Its cosignature/v1 public key: replies not signed by it are refused."""
    timeout_s: float = 10.0
    """Longest wait for one add-checkpoint request and its reply."""
    retry_max_seconds: float = 300.0
    """Cap of the jittered exponential back-off after a failure or refusal."""

    @property
    def name(self) -> str:
        return self.vkey.name


def _parse_one(t: Table) -> WitnessConfig:
    url = t.get("url", str, required=True)
    t.check("url", url, lambda s: s.startswith(("http://", "https://")), "must be an http(s) URL")
    text = t.get("vkey", str, required=True)
    try:
        vkey = WitnessKey.from_vkey(text)
    except LedgerClientError as exc:
        raise ConfigError(f"{t.where}.vkey", str(exc)) from exc
    cfg = WitnessConfig(
        url=url.rstrip("/"),
        vkey=vkey,
        timeout_s=t.check(
            "timeout_s", t.get("timeout_s", float, WitnessConfig.timeout_s), positive, "must be > 0"
        ),
        retry_max_seconds=t.check(
            "retry_max_seconds",
            t.get("retry_max_seconds", float, WitnessConfig.retry_max_seconds),
            positive,
            "must be > 0",
        ),
    )
    t.done()
    return cfg


def parse_witnesses(root: Table) -> tuple[WitnessConfig, ...]:
    """The ``witnesses`` array of the root table (marks the key as read)."""
    witnesses = tuple(_parse_one(t) for t in root.tables("witnesses"))
    check_unique([w.vkey.to_vkey() for w in witnesses], "witnesses", "vkey", "witnesses")
    return witnesses
