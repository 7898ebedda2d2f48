"""The ``rfc3161:<tsa>`` backend: checkpoint digests timestamped by RFC 3161 authorities.

One HTTP POST per anchor (``application/timestamp-query`` in,
``application/timestamp-reply`` out) with a fresh random nonce; the reply is
checked (rfc3161_messages.py) before anything is recorded, and a token is
final on receipt. The receipt keeps the token (DER, base64) with the TSA's
name and URL and the token's genTime.

Errors are translated here, once: no connection, a timeout, HTTP 5xx, 408
or 429 → LedgerUnavailable; any other HTTP status, or a reply larger than
MAX_REPLY_BYTES → LedgerRejected; what the reply itself is worth is decided
in rfc3161_messages.py. Every message names the TSA and its URL.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from ledger_client.errors import LedgerClientError
from ledger_client.tsa import (
    BACKEND_PREFIX,
    TsaRoots,
    format_gen_time,
    load_tsa_roots,
    verify_token,
)

from ..config import GatewayConfig
from ..errors import AnchorError, ConfigError, LedgerRejected, LedgerUnavailable
from .backend import AnchorProgress
from .rfc3161_messages import read_reply, timestamp_request

__all__ = ["MAX_REPLY_BYTES", "Rfc3161Backend", "build_rfc3161_backends"]

logger = logging.getLogger(__name__)

MAX_REPLY_BYTES = 64 * 1024
"""A timestamp reply is a few kB; anything larger is not one and is not read further."""
_RETRY_STATUS = frozenset({408, 429})


def _random_nonce() -> int:
    return secrets.randbits(64)


class Rfc3161Backend:
    """Anchors checkpoint digests to one timestamp authority."""

    def __init__(
        self,
        tsa: str,
        url: str,
        roots: TsaRoots,
        *,
        required: bool = True,
        timeout_s: float = 10.0,
        nonce: Callable[[], int] = _random_nonce,
    ) -> None:
        self.tsa = tsa
        self.name = BACKEND_PREFIX + tsa
        self.url = url
        self.roots = roots
        self.required = required
        """False: a best-effort TSA whose failures are warnings, not alarms."""
        self.timeout_s = timeout_s
        self._nonce = nonce
        self._client: httpx.AsyncClient | None = None

    @property
    def _who(self) -> str:
        return f"TSA {self.tsa} ({self.url})"

    async def submit(self, digest: bytes, checkpoint_size: int) -> AnchorProgress:
        return await self._stamp(digest)

    async def poll(self, digest: bytes, receipt: Mapping[str, Any]) -> AnchorProgress:
        """A receipt with a good token is final; an attempt that got none asks again."""
        text = receipt.get("token")
        if isinstance(text, str):
            try:
                verify_token(base64.b64decode(text, validate=True), digest, self.roots)
            except (LedgerClientError, ValueError) as exc:
                logger.warning(
                    "%s: stored token does not verify (%s); stamping again", self._who, exc
                )
            else:
                return AnchorProgress("final", dict(receipt))
        return await self._stamp(digest)

    async def _stamp(self, digest: bytes) -> AnchorProgress:
        nonce = self._nonce()
        reply = await self._post(timestamp_request(digest, nonce))
        try:
            stamp = read_reply(reply, digest, nonce, self.roots)
        except AnchorError as exc:
            raise type(exc)(f"{self._who}: {exc}") from exc
        gen_time = format_gen_time(stamp.facts.gen_time)
        logger.info("%s: stamped digest %s at %s", self._who, digest.hex()[:16], gen_time)
        return AnchorProgress(
            "final",
            {
                "tsa": self.tsa,
                "url": self.url,
                "gen_time": gen_time,
                "token": base64.b64encode(stamp.token).decode("ascii"),
            },
        )

    async def _post(self, query: bytes) -> bytes:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout_s), follow_redirects=False
            )
        headers = {
            "Content-Type": "application/timestamp-query",
            "Accept": "application/timestamp-reply",
        }
        try:
            async with (
                asyncio.timeout(self.timeout_s),
                self._client.stream("POST", self.url, content=query, headers=headers) as resp,
            ):
                if resp.status_code != httpx.codes.OK:
                    problem = f"{self._who}: HTTP {resp.status_code} {resp.reason_phrase}"
                    if resp.status_code >= 500 or resp.status_code in _RETRY_STATUS:
                        raise LedgerUnavailable(problem)
                    raise LedgerRejected(problem)
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_REPLY_BYTES:
                        raise LedgerRejected(
                            f"{self._who}: the reply is larger than {MAX_REPLY_BYTES} bytes"
                        )
                return bytes(body)
        except TimeoutError as exc:
            raise LedgerUnavailable(f"{self._who}: no reply within {self.timeout_s:g} s") from exc
        except httpx.HTTPError as exc:
            raise LedgerUnavailable(f"{self._who}: {type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


def build_rfc3161_backends(config: GatewayConfig) -> list[Rfc3161Backend]:
    """One backend per ``[[anchor.rfc3161]]``; unreadable roots refuse the start."""
    backends = []
    for i, tsa in enumerate(config.anchor.rfc3161):
        try:
            roots = load_tsa_roots([tsa.roots])
        except LedgerClientError as exc:
            raise ConfigError(f"{config.path}: anchor.rfc3161[{i}].roots", str(exc)) from exc
        backends.append(
            Rfc3161Backend(tsa.name, tsa.url, roots, required=tsa.required, timeout_s=tsa.timeout_s)
        )
    return backends
