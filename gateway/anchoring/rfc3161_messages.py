"""The two RFC 3161 messages of the rfc3161 backend: the request it sends, the reply it accepts.

Pure: bytes in, bytes or a verdict out; the HTTP exchange is rfc3161.py's.

The request's message imprint is the checkpoint digest itself, declared as
SHA-256: the digest *is* SHA-256 over the checkpoint body, so the TSA
timestamps the checkpoint body (``openssl ts -verify -data <body>`` agrees).
rfc3161-client's request builder only hashes data itself, so the few bytes
of a TimeStampReq are written here.

A reply is recorded only when every check passes (ledger_client/tsa.py holds
the checks a regulator repeats). The token's certificates SET OF, which
OpenSSL-built and other TSAs send in the order they added them, is put into
DER order for rfc3161-client (ledger_client/der_sets.py says why no check is
weakened); what is recorded is the token exactly as the TSA sent it. How a
bad reply is classified:

- LedgerUnavailable, "a later attempt may get a good reply": not a
  TimeStampResp at all (a malformed certificates SET included), status
  "waiting", no token, a token whose nonce or imprint is not ours (a
  confused TSA, a proxy, a replay).
- LedgerRejected, "the TSA said no, or is not one we trust": any other
  non-granted status, and a token whose signature, chain to the configured
  roots or timestamping EKU fails.

Either way nothing is recorded as anchored and the anchorer retries with
back-off; the split tells the technician whether to wait or to look at the
TSA's URL and roots.
"""

from __future__ import annotations

from dataclasses import dataclass

from rfc3161_client import decode_timestamp_response

from ledger_client.der_sets import der_sorted_reply
from ledger_client.errors import AnchorCheckError
from ledger_client.tsa import TokenFacts, TsaRoots, verify_token

from ..errors import LedgerRejected, LedgerUnavailable

__all__ = ["DIGEST_SIZE", "Stamp", "read_reply", "timestamp_request"]

DIGEST_SIZE = 32
_SHA256_OID = "2.16.840.1.101.3.4.2.1"
# AlgorithmIdentifier { id-sha256 (2.16.840.1.101.3.4.2.1), NULL }
_SHA256_ALGORITHM = bytes.fromhex("300d06096086480165030402010500")
_STATUS = {
    1: "granted with modifications",
    2: "rejection",
    3: "waiting",
    4: "revocation warning",
    5: "revocation notification",
}
_WAITING = 3


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def timestamp_request(digest: bytes, nonce: int) -> bytes:
    """DER TimeStampReq (RFC 3161 §2.4.1): version 1, imprint SHA-256 = ``digest``,
    ``nonce``, certReq TRUE (so the reply names its signing certificate)."""
    if len(digest) != DIGEST_SIZE:
        raise ValueError(f"a checkpoint digest is {DIGEST_SIZE} bytes, not {len(digest)}")
    if nonce < 0:
        raise ValueError("the nonce must not be negative")
    # DER INTEGER: minimal big-endian two's complement (a leading 0 keeps it positive).
    nonce_bytes = nonce.to_bytes(nonce.bit_length() // 8 + 1, "big")
    imprint = _tlv(0x30, _SHA256_ALGORITHM + _tlv(0x04, digest))
    return _tlv(0x30, _tlv(0x02, b"\x01") + imprint + _tlv(0x02, nonce_bytes) + b"\x01\x01\xff")


@dataclass(frozen=True)
class Stamp:
    """An accepted reply: the DER TimeStampToken and what it says."""

    token: bytes
    facts: TokenFacts


def read_reply(reply: bytes, digest: bytes, nonce: int, roots: TsaRoots) -> Stamp:
    """Accept a DER TimeStampResp for ``digest`` and ``nonce``, or raise (see the module doc)."""
    try:
        # ``token`` is as sent; the library reads the reply with the token's
        # certificates in DER order (the only bytes that may differ).
        readable, token = der_sorted_reply(reply)
        resp = decode_timestamp_response(readable)
        status = resp.status
    except ValueError as exc:  # a DerError is one too
        raise LedgerUnavailable(
            f"the reply ({len(reply)} bytes) is not an RFC 3161 TimeStampResp: {exc}"
        ) from exc
    if status != 0:
        said = "; ".join(resp.status_string) or "no reason given"
        problem = f"the TSA did not grant: status {_STATUS.get(status, status)} ({said})"
        raise (LedgerUnavailable if status == _WAITING else LedgerRejected)(problem)
    if not token:
        raise LedgerUnavailable("the reply says granted but holds no token")
    try:
        info = resp.tst_info
        algorithm = info.message_imprint.hash_algorithm.dotted_string
        imprint, their_nonce = info.message_imprint.message, info.nonce
    except ValueError as exc:
        raise LedgerUnavailable(f"the token cannot be read: {exc}") from exc
    if algorithm != _SHA256_OID or imprint != digest:
        raise LedgerUnavailable(
            f"the token is for another imprint ({algorithm} {imprint.hex()}), "
            f"not checkpoint digest {digest.hex()}"
        )
    if their_nonce != nonce:
        raise LedgerUnavailable(f"the token's nonce {their_nonce} is not ours ({nonce})")
    try:
        facts = verify_token(token, digest, roots, nonce=nonce)
    except AnchorCheckError as exc:
        raise LedgerRejected(str(exc)) from exc
    return Stamp(token, facts)
