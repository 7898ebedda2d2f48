"""Ethereum JSON-RPC over HTTP (httpx), with endpoint failover and a chain-id guard.

This is the one place httpx errors become gateway errors. An endpoint that
cannot be reached, times out, answers HTTP errors or something that is not a
JSON-RPC reply is skipped for the next one; when none answers the call raises
LedgerUnavailable naming each endpoint's failure. An endpoint is asked
``eth_chainId`` before its first use (and again after it failed): one on
another chain is never used, and if every endpoint is on the wrong chain the
call raises ChainMismatch, a LedgerRejected — a configuration error that no
retry fixes. A JSON-RPC ``error`` reply means the node answered and said no:
it is raised as RpcError at once, without trying other endpoints.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from ..errors import LedgerRejected, LedgerUnavailable

__all__ = ["ChainMismatch", "EvmRpc", "RpcError", "quantity"]

logger = logging.getLogger(__name__)


class RpcError(LedgerRejected):
    """The node answered a JSON-RPC error object."""

    def __init__(self, url: str, method: str, code: int | None, message: str) -> None:
        super().__init__(f"{url}: {method}: {message} (code {code})")
        self.url = url
        self.method = method
        self.code = code
        self.message = message


class ChainMismatch(LedgerRejected):
    """Every endpoint serves a chain other than the configured one."""

    hint = "check chain_id and rpc of this [[anchor.evm]] table: an endpoint is on another chain"


class _Unusable(Exception):
    """Internal: this endpoint failed; try the next."""


@dataclass
class _Endpoint:
    url: str
    checked: bool = False
    mismatch: str | None = None


def quantity(value: Any, what: str) -> int:
    """A JSON-RPC quantity ("0x1a") as an int; LedgerUnavailable if it is not one."""
    if not isinstance(value, str) or not value.startswith("0x"):
        raise LedgerUnavailable(f"the node answered {what} that is not a 0x quantity: {value!r}")
    try:
        return int(value, 16)
    except ValueError as exc:
        raise LedgerUnavailable(f"the node answered {what} {value!r}, not a quantity") from exc


class EvmRpc:
    """JSON-RPC client for one chain. Use as ``async with EvmRpc(...)`` or call ``aclose``.

    Args:
        urls: endpoints in order of preference; the last one that answered is
            tried first next time.
        chain_id: the EIP-155 chain id every endpoint must report.
        timeout_s: per request.
        transport: an httpx transport (tests only; default: the network).
        token: sent as ``Authorization: Bearer <token>`` (a node behind an
            authenticating proxy); never logged.
    """

    def __init__(
        self,
        urls: Sequence[str],
        chain_id: int,
        *,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        token: str | None = None,
    ) -> None:
        if not urls:
            raise ValueError("EvmRpc needs at least one endpoint")
        self.chain_id = chain_id
        self.timeout_s = timeout_s
        self._endpoints = [_Endpoint(u) for u in urls]
        self._current = 0
        self._ids = itertools.count(1)
        self._transport = transport
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client: httpx.AsyncClient | None = None

    @property
    def url(self) -> str:
        """The endpoint in use (the last one that answered)."""
        return self._endpoints[self._current].url

    async def __aenter__(self) -> EvmRpc:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.timeout_s, transport=self._transport, headers=self._headers
            )
        return self._client

    async def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        """Call ``method`` on the first endpoint that answers; return its ``result``."""
        failures: list[str] = []
        n = len(self._endpoints)
        for i in (self._current + k for k in range(n)):
            ep = self._endpoints[i % n]
            try:
                if not ep.checked:
                    await self._check_chain(ep)
                result = await self._post(ep.url, method, params)
            except _Unusable as exc:
                failures.append(f"{ep.url}: {exc}")
                continue
            if i % n != self._current:
                logger.warning("JSON-RPC: failed over to %s", ep.url)
                self._current = i % n
            return result
        mismatches = [ep.mismatch for ep in self._endpoints if ep.mismatch]
        if len(mismatches) == n:
            raise ChainMismatch("; ".join(mismatches))
        raise LedgerUnavailable(
            f"no JSON-RPC endpoint answered {method} ({n} tried): " + "; ".join(failures)
        )

    async def _check_chain(self, ep: _Endpoint) -> None:
        got = quantity(await self._post(ep.url, "eth_chainId", ()), "a chain id")
        if got != self.chain_id:
            ep.mismatch = (
                f"{ep.url} serves chain {got}, not the configured chain_id {self.chain_id}; "
                "refusing to use it"
            )
            logger.error("JSON-RPC: %s", ep.mismatch)
            raise _Unusable(ep.mismatch)
        ep.checked, ep.mismatch = True, None

    async def _post(self, url: str, method: str, params: Sequence[Any]) -> Any:
        ident = next(self._ids)
        body = {"jsonrpc": "2.0", "id": ident, "method": method, "params": list(params)}
        ep = next(e for e in self._endpoints if e.url == url)
        try:
            reply = await self._http().post(url, json=body)
        except httpx.HTTPError as exc:
            ep.checked = False  # whatever answers here next may be another node
            raise _Unusable(f"{method}: {type(exc).__name__}: {exc}") from exc
        if reply.status_code != 200:
            ep.checked = False
            raise _Unusable(f"{method}: HTTP {reply.status_code}")
        try:
            doc = reply.json()
        except ValueError as exc:
            raise _Unusable(f"{method}: the reply is not JSON") from exc
        if not isinstance(doc, dict) or doc.get("id") != ident:
            raise _Unusable(f"{method}: not a JSON-RPC reply to this request")
        error = doc.get("error")
        if error is not None:
            err = error if isinstance(error, dict) else {}
            code = err.get("code")
            raise RpcError(
                url,
                method,
                code if isinstance(code, int) else None,
                str(err.get("message", error)),
            )
        if "result" not in doc:
            raise _Unusable(f"{method}: the reply has neither result nor error")
        return doc["result"]
