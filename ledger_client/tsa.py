"""RFC 3161 timestamp tokens: how an ``rfc3161:<tsa>`` anchor is checked.

riverseal asks a timestamp authority (TSA) for a token whose message imprint
is SHA-256 over the checkpoint body. That hash *is* the checkpoint digest an
anchor commits to (docs/bundle-format.md §5, §7), so the imprint is compared
with the digest byte for byte, and ``openssl ts -verify -digest <hex>`` (or
``-data <checkpoint body>``) checks the same token without riverseal.

A token is accepted only when: it is a DER TimeStampToken; its imprint uses
SHA-256 and equals the digest; its CMS signature verifies and its signer's
certificate chains to one of the given roots, evaluated at genTime; that
certificate carries the id-kp-timeStamping extended key usage, marked
critical; and (at the gateway) its nonce is the one sent. Its genTime is then
the time by which the checkpoint demonstrably existed.

The CMS and X.509 work is rfc3161-client's (≥ 1.0.6, which picks the signer
certificate by the SignerInfo's issuer and serial, so a token of one TSA
cannot pass as another's). It is imported lazily: the offline verifier needs
only PyNaCl, and only ``--tsa-roots`` needs ``riverseal[online]``. The
library reads strict DER; a token whose certificates SET OF is in the order
its TSA added them (OpenSSL with ``certs =``, and TSAs in the field) is
handed to it with that SET in DER order (der_sets.py says why that is sound),
while the receipt keeps the token as sent.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .anchors import AnchorEvidence
from .bundle import AnchorReceipt
from .der_sets import DerError, der_sorted_token, token_gen_time
from .errors import AnchorCheckError, LedgerClientError, LedgerUnreachable, MalformedError
from .records import parse_time

if TYPE_CHECKING:
    from cryptography.x509 import Certificate
    from rfc3161_client import Accuracy, TimeStampResponse

__all__ = [
    "BACKEND_PREFIX",
    "MAX_ROOTS_BYTES",
    "TokenFacts",
    "TsaChecker",
    "TsaRoots",
    "decode_token",
    "format_gen_time",
    "load_tsa_roots",
    "verify_token",
]

BACKEND_PREFIX = "rfc3161:"
"""Anchors labelled ``rfc3161:<tsa name>`` hold a TSA token in their receipt."""
MAX_ROOTS_BYTES = 1 << 20
"""A roots file larger than this is refused: PEM bundles of real CAs are a few kB."""

_SHA256_OID = "2.16.840.1.101.3.4.2.1"
_DIGEST_SIZE = 32
# TimeStampResp ::= SEQUENCE { status PKIStatusInfo, timeStampToken }: a
# receipt keeps the signed token only; the status wrapper (unsigned) is
# rebuilt as "granted" so the library can read it.
_GRANTED = b"\x30\x03\x02\x01\x00"
_INSTALL_HINT = "checking RFC 3161 anchors needs rfc3161-client: pip install 'riverseal[online]'"


@dataclass(frozen=True)
class TokenFacts:
    """What a verified token says."""

    gen_time: datetime
    """Timezone-aware genTime: when the TSA signed."""
    serial: int
    policy: str
    """The TSA policy OID, dotted."""
    signer: str
    """The signing certificate's subject (RFC 4514)."""
    nonce: int | None
    accuracy_s: float | None = None
    """The TSA's stated accuracy of genTime, when the token gives one."""


class TsaRoots:
    """Trusted TSA root certificates, parsed once; build with ``from_pem``."""

    def __init__(self, certs: Sequence[Certificate], source: str) -> None:
        if not certs:
            raise MalformedError(f"{source}: no certificate")
        self.certs = tuple(certs)
        self.source = source

    @classmethod
    def from_pem(cls, data: bytes, source: str) -> TsaRoots:
        """Every certificate of a PEM bundle; ``source`` names it in errors."""
        _require_library()
        from cryptography.x509 import load_pem_x509_certificates

        try:
            certs = load_pem_x509_certificates(data)
        except ValueError as exc:
            raise MalformedError(f"{source}: not PEM certificates ({exc})") from exc
        return cls(certs, source)


def load_tsa_roots(paths: Sequence[Path]) -> TsaRoots:
    """Read PEM root certificate files; an unreadable or non-PEM file is an error naming it."""
    certs: list[Certificate] = []
    for path in paths:
        try:
            if path.stat().st_size > MAX_ROOTS_BYTES:
                raise MalformedError(f"TSA roots {path}: larger than {MAX_ROOTS_BYTES} bytes")
            data = path.read_bytes()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise LedgerUnreachable(f"cannot read TSA roots {str(path)!r}: {reason}") from exc
        certs.extend(TsaRoots.from_pem(data, f"TSA roots {path}").certs)
    return TsaRoots(certs, "TSA roots " + ", ".join(str(p) for p in paths))


def _require_library() -> None:
    if importlib.util.find_spec("rfc3161_client") is None:
        raise LedgerUnreachable(_INSTALL_HINT)


def format_gen_time(t: datetime) -> str:
    """genTime as the bundle writes times: RFC 3339 UTC with microseconds."""
    t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{t.microsecond:06d}Z"


def decode_token(token: bytes) -> TimeStampResponse:
    """Parse a DER TimeStampToken; AnchorCheckError if it is not one.

    Its certificates SET OF is put into DER order first (der_sets.py): the
    response parsed is of that copy; ``token`` itself is not changed.
    """
    _require_library()
    from rfc3161_client import decode_timestamp_response

    try:
        body = _GRANTED + der_sorted_token(token)
        resp = decode_timestamp_response(_der_sequence(body))
        resp.tst_info.gen_time  # noqa: B018  (parsing is lazy in places: force it)
    except ValueError as exc:  # a DerError is one too
        raise AnchorCheckError(f"the token is not a DER RFC 3161 TimeStampToken ({exc})") from exc
    return resp


def verify_token(
    token: bytes, digest: bytes, roots: TsaRoots, *, nonce: int | None = None
) -> TokenFacts:
    """Check ``token`` (DER TimeStampToken) for ``digest``; raise AnchorCheckError saying why not.

    ``nonce``: the one the request carried (the gateway knows it; a later
    verifier does not, and the imprint binds the token to the checkpoint).
    """
    _require_library()
    from rfc3161_client import VerificationError, VerifierBuilder

    resp = decode_token(token)
    info = resp.tst_info
    algorithm = info.message_imprint.hash_algorithm.dotted_string
    if algorithm != _SHA256_OID:
        raise AnchorCheckError(f"the token's imprint uses hash {algorithm}, not SHA-256")
    imprint = info.message_imprint.message
    if len(digest) != _DIGEST_SIZE or imprint != digest:
        raise AnchorCheckError(
            f"the token timestamps imprint {imprint.hex()}, not this checkpoint's "
            f"digest {digest.hex()}"
        )
    if nonce is not None and info.nonce != nonce:
        raise AnchorCheckError(f"the token's nonce {info.nonce} is not the request's {nonce}")
    builder = VerifierBuilder(nonce=nonce)
    for cert in roots.certs:
        builder = builder.add_root_certificate(cert)
    try:
        builder.build().verify(resp, digest)
    except VerificationError as exc:
        raise AnchorCheckError(
            f"the token does not verify against {roots.source}: {_reason(exc)}"
        ) from exc
    gen_time = info.gen_time
    if gen_time.tzinfo is None:  # GeneralizedTime in a token is UTC by RFC 3161
        gen_time = gen_time.replace(tzinfo=UTC)
    try:
        exact = token_gen_time(token)  # the library drops fractions of a second
    except DerError as exc:
        raise AnchorCheckError(f"the token's genTime cannot be read: {exc}") from exc
    if exact.replace(microsecond=0) != gen_time.replace(microsecond=0):
        raise AnchorCheckError(
            f"the token's genTime reads {format_gen_time(exact)} here and "
            f"{format_gen_time(gen_time)} to the token library"
        )
    gen_time = exact
    return TokenFacts(
        gen_time,
        info.serial_number,
        info.policy.dotted_string,
        _signer(resp),
        nonce,
        _accuracy(resp),
    )


def _accuracy(resp: TimeStampResponse) -> float | None:
    # Optional in a TSTInfo; the library then gives None despite its annotation.
    acc: Accuracy | None = resp.tst_info.accuracy
    if acc is None:
        return None
    return (acc.seconds or 0) + (acc.millis or 0) / 1e3 + (acc.micros or 0) / 1e6


def _reason(exc: Exception) -> str:
    text = str(exc)
    if not text.startswith("Error while verifying certificates"):
        return text
    # The library passes OpenSSL's error stack through: keep its verify error, or
    # else the reasons it lists ("signature failure", "digest failure").
    _, found, rest = text.partition("Verify error: ")
    if found:
        gist = rest.split('"', 1)[0]
    else:
        reasons = dict.fromkeys(re.findall(r'reason: "([^"]*)"', text))
        gist = "; ".join(reasons) or text
    return f"its CMS signature or certificate chain does not verify ({gist})"


def _signer(resp: TimeStampResponse) -> str:
    from cryptography.x509 import load_der_x509_certificate

    (si,) = resp.signed_data.signer_infos
    for der in resp.signed_data.certificates:
        cert = load_der_x509_certificate(der)
        if cert.issuer == si.issuer and cert.serial_number == si.serial_number:
            return cert.subject.rfc4514_string()
    return f"serial {si.serial_number} of {si.issuer.rfc4514_string()}"  # not reached: verified


def _der_sequence(content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return b"\x30" + bytes([n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return b"\x30" + bytes([0x80 | len(size)]) + size + content


class TsaChecker:
    """The AnchorChecker for ``rfc3161:<tsa>`` receipts, against the regulator's TSA roots."""

    def __init__(self, roots: TsaRoots) -> None:
        self.roots = roots

    def handles(self, backend: str) -> bool:
        return backend.startswith(BACKEND_PREFIX)

    def check(self, anchor: AnchorReceipt) -> AnchorEvidence:
        tsa = anchor.backend.removeprefix(BACKEND_PREFIX)
        try:
            facts = self._check(tsa, anchor)
        except AnchorCheckError as exc:
            raise AnchorCheckError(f"TSA {tsa}: {exc}") from exc
        accuracy = "" if facts.accuracy_s is None else f" ± {facts.accuracy_s:g} s"
        return AnchorEvidence(
            facts.gen_time,
            f"TSA {tsa} token: genTime {format_gen_time(facts.gen_time)}{accuracy}, "
            f"serial {facts.serial}, policy {facts.policy}, signed by {facts.signer}",
        )

    def _check(self, tsa: str, anchor: AnchorReceipt) -> TokenFacts:
        receipt = anchor.receipt
        text = receipt.get("token")
        if not isinstance(text, str) or not text:
            raise AnchorCheckError(f"the receipt holds no token (state {anchor.state!r})")
        try:
            token = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise AnchorCheckError("the receipt's token is not base64") from exc
        named = receipt.get("tsa")
        if named is not None and named != tsa:
            raise AnchorCheckError(f"the receipt names TSA {named!r}, not {tsa!r}")
        facts = verify_token(token, anchor.digest, self.roots)
        stated = receipt.get("gen_time")
        if stated is not None and not _same_instant(stated, facts.gen_time):
            raise AnchorCheckError(
                f"the receipt's gen_time {stated!r} is not the token's "
                f"{format_gen_time(facts.gen_time)}"
            )
        if anchor.state != "final":
            raise AnchorCheckError(f"a TSA anchor is final once stamped, not {anchor.state!r}")
        return facts


def _same_instant(text: Any, t: datetime) -> bool:
    """The receipt's informational gen_time names the token's genTime: exactly, or in
    the whole seconds riverseal's gateway wrote before it read fractions (a smaller
    claim, never a later one)."""
    try:
        stated = parse_time(text)
    except LedgerClientError:
        return False
    return stated in (t, t.replace(microsecond=0))
