"""A timestamp token's certificates, put into the order DER requires before it is parsed.

An RFC 3161 TimeStampToken is a CMS ContentInfo holding a SignedData
(RFC 5652 §5.1)::

    SignedData ::= SEQUENCE {
      version           CMSVersion,
      digestAlgorithms  SET OF DigestAlgorithmIdentifier,
      encapContentInfo  EncapsulatedContentInfo,         -- the TSTInfo
      certificates      [0] IMPLICIT CertificateSet OPTIONAL,
      crls              [1] IMPLICIT RevocationInfoChoices OPTIONAL,
      signerInfos       SET OF SignerInfo }

DER (X.690 §11.6) puts the elements of a SET OF in ascending order of their
encodings. OpenSSL writes ``certificates`` in the order they were added (the
signer's certificate, then the chain of a TSA's ``certs =`` file:
openssl/openssl#13142), and TSAs in the field do the same; ``openssl ts
-verify`` accepts such a token, rfc3161-client (a strict DER reader) refuses
it with ``InvalidSetOrdering``. So the token is handed to the library with
that one SET re-encoded in DER order. Why that weakens no check:

- What the TSA signed is not touched. The SignerInfo signature is over the
  DER of its ``signedAttrs``, which hold the digest of the encapsulated
  TSTInfo (imprint, genTime, nonce, policy, serial); ``certificates`` is
  outside both. Permuting its elements changes no signed byte, so checking
  the sorted token is checking the original one.
- The order of a SET carries no meaning: the signer's certificate is found
  by the SignerInfo's issuer and serial number, a chain by names and keys.
- Only whole elements move, so the result has the same length and differs
  from the input only inside that SET; every enclosing length stays valid.
  The library sees the same certificates, as many, byte for byte.
- Nothing new can pass: a token is accepted only when its sorted copy,
  which is itself a token a TSA could send, passes every check of the
  library (signature, chain to the roots at genTime, signer by issuer and
  serial, critical timestamping EKU) and riverseal's (imprint, nonce).
- ``signedAttrs`` are never reordered: the signature covers their encoding
  as sent (re-tagged as SET), and sorting them would change the hashed
  bytes. OpenSSL sorts them before it signs; a token whose ``signedAttrs``
  are not in DER order is left as it is, and the library refuses it.
- The sorted copy lives only in memory while a token is checked: a receipt
  keeps the token exactly as the TSA sent it, and every check sorts afresh.

The walker reads only the few elements on the way to that SET and the
elements of the SET itself: definite lengths in their minimal form, nothing
running past its container, no bytes after the last element. Anything else
(a BER indefinite length, a truncated or overlong element) is refused with
DerError, saying what and where: a parser that is lenient here could not be
trusted to have found the same SET as the library does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = ["DerError", "der_sorted_reply", "der_sorted_token", "token_gen_time"]

_SEQUENCE = b"\x30"
_SET = b"\x31"
_INTEGER = b"\x02"
_OID = b"\x06"
_CONTEXT_0 = b"\xa0"  # [0], constructed: ContentInfo.content, SignedData.certificates
_CONTEXT_1 = b"\xa1"  # [1], constructed: SignedData.crls
# OBJECT IDENTIFIER id-signedData (1.2.840.113549.1.7.2), tag and length included
_SIGNED_DATA_OID = bytes.fromhex("06092a864886f70d010702")
_MAX_LENGTH_OCTETS = 4  # 4 GiB: far beyond any token; longer is refused, not read
_MAX_TAG_OCTETS = 5  # identifier octets of a high tag number (≥ 31), first octet included


class DerError(ValueError):
    """The bytes are not the DER the walk expects; the message says what and where."""


@dataclass(frozen=True)
class _Element:
    """One DER element of ``data``: identifier octets, and where it and its contents lie."""

    tag: bytes
    start: int
    body: int
    end: int


def _element(data: bytes, at: int, limit: int, what: str) -> _Element:
    """The element starting at ``at``, which must end by ``limit``."""
    if at >= limit:
        raise DerError(f"{what} is missing (offset {at})")
    i = at + 1
    if data[at] & 0x1F == 0x1F:  # high tag number: base-128 octets, the last without bit 8
        while True:
            if i >= limit:
                raise DerError(f"{what} at offset {at}: its tag runs past its container")
            octet = data[i]
            i += 1
            if i == at + 2 and octet == 0x80:
                raise DerError(f"{what} at offset {at}: its tag number is not minimally encoded")
            if not octet & 0x80:
                break
            if i - at >= _MAX_TAG_OCTETS:
                raise DerError(f"{what} at offset {at}: its tag number is too long")
        if i == at + 2 and data[at + 1] < 0x1F:
            raise DerError(f"{what} at offset {at}: a tag number below 31 in the long form")
    tag = data[at:i]
    if i >= limit:
        raise DerError(f"{what} at offset {at}: no length before the end of its container")
    first = data[i]
    i += 1
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise DerError(f"{what} at offset {at}: an indefinite length (BER, not DER)")
    else:
        count = first & 0x7F
        if count > _MAX_LENGTH_OCTETS:
            raise DerError(f"{what} at offset {at}: a length of {count} octets")
        if i + count > limit:
            raise DerError(f"{what} at offset {at}: its length runs past its container")
        octets = data[i : i + count]
        i += count
        length = int.from_bytes(octets, "big")
        if octets[0] == 0 or length < 0x80:
            raise DerError(f"{what} at offset {at}: its length is not minimally encoded")
    if length > limit - i:
        raise DerError(
            f"{what} at offset {at}: {length} bytes of contents, but only {limit - i} remain "
            "in its container"
        )
    return _Element(tag, at, i, i + length)


def _expect(data: bytes, at: int, limit: int, tag: bytes, what: str) -> _Element:
    found = _element(data, at, limit, what)
    if found.tag != tag:
        raise DerError(f"{what} at offset {at}: tag {found.tag.hex()}, expected {tag.hex()}")
    return found


def _only(data: bytes, at: int, limit: int, tag: bytes, what: str) -> _Element:
    """``_expect``, and the element must fill its container to ``limit``."""
    found = _expect(data, at, limit, tag, what)
    if found.end != limit:
        raise DerError(f"{limit - found.end} bytes follow the {what} (offset {found.end})")
    return found


def _certificates(token: bytes, start: int, limit: int) -> _Element | None:
    """The ``certificates`` [0] of the ContentInfo filling ``token[start:limit]``, if any."""
    info = _only(token, start, limit, _SEQUENCE, "ContentInfo")
    oid = _expect(token, info.body, info.end, _OID, "ContentInfo contentType")
    if token[oid.start : oid.end] != _SIGNED_DATA_OID:
        raise DerError(
            f"the content is not CMS SignedData (contentType {token[oid.body : oid.end].hex()})"
        )
    content = _only(token, oid.end, info.end, _CONTEXT_0, "ContentInfo content [0]")
    signed = _only(token, content.body, content.end, _SEQUENCE, "SignedData")
    at = _expect(token, signed.body, signed.end, _INTEGER, "SignedData version").end
    at = _expect(token, at, signed.end, _SET, "SignedData digestAlgorithms").end
    at = _expect(token, at, signed.end, _SEQUENCE, "SignedData encapContentInfo").end
    certificates = None
    found = _element(token, at, signed.end, "SignedData signerInfos")
    if found.tag == _CONTEXT_0:
        certificates = found
        found = _element(token, found.end, signed.end, "SignedData signerInfos")
    if found.tag == _CONTEXT_1:  # crls: left as they are
        found = _element(token, found.end, signed.end, "SignedData signerInfos")
    _only(token, found.start, signed.end, _SET, "SignedData signerInfos")
    return certificates


def _sorted_within(token: bytes, start: int, limit: int) -> bytes:
    """``token[start:limit]`` (one ContentInfo) with its certificates SET OF in DER order."""
    certificates = _certificates(token, start, limit)
    if certificates is None:
        return token[start:limit]
    elements: list[bytes] = []
    at = certificates.body
    try:
        while at < certificates.end:
            element = _element(token, at, certificates.end, f"element {len(elements) + 1}")
            elements.append(token[element.start : element.end])
            at = element.end
    except DerError as exc:
        raise DerError(
            f"the SignedData certificates [0] SET OF at offset {certificates.start} "
            f"is malformed: {exc}"
        ) from exc
    ordered = sorted(elements)  # X.690 §11.6: ascending, compared as octet strings
    if ordered == elements:
        return token[start:limit]
    return b"".join((token[start : certificates.body], *ordered, token[certificates.end : limit]))


def der_sorted_token(token: bytes) -> bytes:
    """The DER TimeStampToken ``token`` with its certificates SET OF in DER order.

    Every other byte is kept; the result has the same length (it is ``token``
    itself when the SET was already in order). Raise DerError when the walk
    to the SET, or any element of the SET, is not well-formed DER.
    """
    return _sorted_within(token, 0, len(token))


def der_sorted_reply(reply: bytes) -> tuple[bytes, bytes | None]:
    """(``reply`` with its token's certificates in DER order, the token as sent or None).

    ``reply`` is a DER TimeStampResp (RFC 3161 §2.4.2): SEQUENCE { status
    PKIStatusInfo, timeStampToken OPTIONAL }. Raise DerError as
    ``der_sorted_token`` does, or when the reply is not that SEQUENCE.
    """
    resp = _only(reply, 0, len(reply), _SEQUENCE, "TimeStampResp")
    status = _expect(reply, resp.body, resp.end, _SEQUENCE, "TimeStampResp status")
    if status.end == resp.end:
        return reply, None
    token = _only(reply, status.end, resp.end, _SEQUENCE, "TimeStampResp timeStampToken")
    sorted_token = _sorted_within(reply, token.start, token.end)
    return (
        reply[: token.start] + sorted_token + reply[token.end :],
        reply[token.start : token.end],
    )


_OCTET_STRING = b"\x04"
_GENERALIZED_TIME = b"\x18"


def token_gen_time(token: bytes) -> datetime:
    """The exact ``genTime`` of a DER TimeStampToken, fractions of a second included.

    rfc3161-client 1.0.9 returns genTime in whole seconds, dropping the
    fraction RFC 3161 §2.4.2 allows (``YYYYMMDDhhmmss[.s...]Z``): a token stamped
    at 10:00:15.9 would read as 10:00:15, and "recorded no later than" would
    claim 0.9 s more than the TSA signed. So the verifier takes the time from
    the signed TSTInfo itself: ContentInfo → SignedData → encapContentInfo →
    eContent [0] → OCTET STRING → TSTInfo { version, policy, messageImprint,
    serialNumber, genTime }. Fractions finer than a microsecond are rounded up
    (the bound may only be later than the TSA's time, never earlier).
    """
    info = _only(token, 0, len(token), _SEQUENCE, "ContentInfo")
    oid = _expect(token, info.body, info.end, _OID, "ContentInfo contentType")
    content = _only(token, oid.end, info.end, _CONTEXT_0, "ContentInfo content [0]")
    signed = _only(token, content.body, content.end, _SEQUENCE, "SignedData")
    at = _expect(token, signed.body, signed.end, _INTEGER, "SignedData version").end
    at = _expect(token, at, signed.end, _SET, "SignedData digestAlgorithms").end
    encap = _expect(token, at, signed.end, _SEQUENCE, "SignedData encapContentInfo")
    kind = _expect(token, encap.body, encap.end, _OID, "encapContentInfo eContentType")
    wrapper = _only(token, kind.end, encap.end, _CONTEXT_0, "encapContentInfo eContent [0]")
    octets = _only(token, wrapper.body, wrapper.end, _OCTET_STRING, "eContent OCTET STRING")
    tst = _only(token, octets.body, octets.end, _SEQUENCE, "TSTInfo")
    at = _expect(token, tst.body, tst.end, _INTEGER, "TSTInfo version").end
    at = _expect(token, at, tst.end, _OID, "TSTInfo policy").end
    at = _expect(token, at, tst.end, _SEQUENCE, "TSTInfo messageImprint").end
    at = _expect(token, at, tst.end, _INTEGER, "TSTInfo serialNumber").end
    gen = _expect(token, at, tst.end, _GENERALIZED_TIME, "TSTInfo genTime")
    text = token[gen.body : gen.end].decode("ascii", "replace")
    match = _GEN_TIME.fullmatch(text)
    if match is None:
        raise DerError(f"TSTInfo genTime {text!r} is not YYYYMMDDhhmmss[.f]Z")
    whole = datetime.strptime(match.group(1), "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    fraction = match.group(2) or ""
    micros = int((fraction + "000000")[:6]) if fraction else 0
    if len(fraction) > 6 and int(fraction[6:]) > 0:
        micros += 1  # round up: never claim an earlier time than the TSA signed
    return whole + timedelta(microseconds=micros)


# RFC 3161 §2.4.2: UTC ("Z"), seconds always present, a fraction without trailing zeros.
_GEN_TIME = re.compile(r"(\d{14})(?:\.(\d*[1-9]))?Z", re.ASCII)
