"""TSA interop (issue 11): tokens whose certificates SET OF is not in DER order.

The chained test authority (tests/servers/tsa_server.py, ``/chain``) is set
up as OpenSSL's sample configuration is, with ``certs =`` embedding its CA
chain: ``openssl ts -reply`` writes the token's certificates in insertion
order, which here is never DER order. rfc3161-client refuses such a token
as it is; riverseal hands it a copy with that SET in DER order
(ledger_client/der_sets.py) and keeps the token as sent. These tests check,
with the real openssl TSA, that such tokens are genuine (``openssl ts
-verify``), are anchored by a station and verified by ``ledger-verify``,
that the receipt holds the exact bytes the TSA sent, and that the signature,
chain, imprint and nonce checks still refuse what they refused before.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import load_pem_x509_certificate
from rfc3161_client import decode_timestamp_response

from gateway.anchoring.rfc3161_messages import read_reply, timestamp_request
from gateway.cli import main as gateway_cli
from gateway.config import load_config
from gateway.errors import LedgerRejected, LedgerUnavailable
from gateway.keys import load_device_key
from ledger_client.bundle import Bundle
from ledger_client.cli import EXIT_FAILED, EXIT_OK
from ledger_client.cli import main as ledger_verify
from ledger_client.der_sets import DerError, der_sorted_reply, der_sorted_token
from ledger_client.errors import AnchorCheckError
from ledger_client.tsa import load_tsa_roots, verify_token
from tests.anchoring.test_rfc3161_station import final_of, make_station, run_station
from tests.servers.tsa_server import OPENSSL, TestTsa, rfc3161_toml

DIGEST = hashlib.sha256(b"a checkpoint body\n").digest()
NONCE = 0x1234_5678_9ABC


def chain_ders(tsa: TestTsa) -> list[bytes]:
    """The chained authority's certificates (DER): its TSA's, the intermediate, the root."""
    assert tsa.chained is not None
    folder = tsa.chained.dir
    return [
        load_pem_x509_certificate(p.read_bytes()).public_bytes(Encoding.DER)
        for p in (folder / "tsa.crt", folder / "inter.crt", tsa.roots)
    ]


def embedded_order(token: bytes, ders: list[bytes]) -> tuple[int, list[bytes]]:
    """(where the certificates start, the certificates in the order the token holds them).

    Found by searching for each certificate's own encoding, not by der_sets.
    """
    at = {der: token.find(der) for der in ders}
    assert all(i > 0 for i in at.values()), "every certificate of the chain is embedded"
    ordered = sorted(ders, key=at.__getitem__)
    start = at[ordered[0]]
    assert [at[d] for d in ordered] == [
        start + sum(len(d) for d in ordered[:i]) for i in range(len(ordered))
    ], "the certificates lie side by side, as the elements of one SET"
    return start, ordered


def openssl_verifies(token: bytes, digest: bytes, roots: Path, folder: Path) -> bool:
    path = folder / f"token-{hashlib.sha256(token).hexdigest()[:12]}.der"
    path.write_bytes(token)
    done = subprocess.run(
        [OPENSSL, "ts", "-verify", "-digest", digest.hex(), "-in", str(path), "-token_in",
         "-CAfile", str(roots)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return done.returncode == 0 and "Verification: OK" in done.stdout


def chain_reply(tsa: TestTsa, nonce: int = NONCE, digest: bytes = DIGEST) -> bytes:
    assert tsa.chained is not None
    return tsa.stamp(timestamp_request(digest, nonce), tsa.chained)


def test_the_chained_tsa_sends_a_genuine_token_whose_set_is_not_in_der_order(
    tsa: TestTsa, tmp_path: Path
) -> None:
    reply = chain_reply(tsa)
    _, token = der_sorted_reply(reply)
    assert token is not None and reply.endswith(token)
    ders = chain_ders(tsa)
    _, held = embedded_order(token, ders)
    assert held == [ders[0], *sorted(ders[1:], reverse=True)]  # signer, then the certs file
    assert held != sorted(held)  # not DER order
    # the library refuses the reply as sent ...
    with pytest.raises(ValueError, match=r"InvalidSetOrdering.*SignedData::certificates"):
        decode_timestamp_response(reply).tst_info  # noqa: B018
    # ... while openssl verifies the token, with nothing but the root given
    assert openssl_verifies(token, DIGEST, tsa.roots, tmp_path)
    assert not openssl_verifies(token, bytes(32), tsa.roots, tmp_path)


def test_the_sorted_copy_moves_only_the_certificates(tsa: TestTsa, tmp_path: Path) -> None:
    reply = chain_reply(tsa)
    readable, token = der_sorted_reply(reply)
    assert token is not None
    ders = chain_ders(tsa)
    start, held = embedded_order(token, ders)
    copy = der_sorted_token(token)
    assert len(copy) == len(token)
    end = start + sum(map(len, ders))
    assert copy[:start] == token[:start] and copy[end:] == token[end:]
    assert copy[start:end] == b"".join(sorted(held))
    assert readable == reply[: len(reply) - len(token)] + copy
    assert der_sorted_token(copy) == copy  # already in order: unchanged
    # the copy is as genuine as the token: the order is no part of what was signed
    assert openssl_verifies(copy, DIGEST, tsa.roots, tmp_path)
    decode_timestamp_response(readable).tst_info  # noqa: B018  (the library reads it)


def test_the_gateway_accepts_the_reply_and_keeps_the_token_as_sent(
    tsa: TestTsa, tmp_path: Path
) -> None:
    reply = chain_reply(tsa)
    stamp = read_reply(reply, DIGEST, NONCE, load_tsa_roots([tsa.roots]))
    assert reply.endswith(stamp.token)  # the exact bytes the TSA sent
    assert der_sorted_token(stamp.token) != stamp.token
    assert stamp.facts.signer == "CN=Riverseal Chained TSA"  # found by issuer and serial
    assert stamp.facts.nonce == NONCE
    assert openssl_verifies(stamp.token, DIGEST, tsa.roots, tmp_path)
    # the verifier's check of the stored token agrees
    facts = verify_token(stamp.token, DIGEST, load_tsa_roots([tsa.roots]))
    assert (facts.gen_time, facts.serial) == (stamp.facts.gen_time, stamp.facts.serial)


def test_the_gateway_still_refuses_what_it_refused(tsa: TestTsa) -> None:
    roots = load_tsa_roots([tsa.roots])
    reply = chain_reply(tsa)
    with pytest.raises(LedgerUnavailable, match=f"nonce {NONCE} is not ours"):
        read_reply(reply, DIGEST, NONCE + 1, roots)
    other = hashlib.sha256(b"another checkpoint\n").digest()
    with pytest.raises(LedgerUnavailable, match="token is for another imprint"):
        read_reply(reply, other, NONCE, roots)
    # (the embedded chain ends in the trusted root, which the other roots do not hold)
    with pytest.raises(LedgerRejected, match="self-signed certificate in certificate chain"):
        read_reply(reply, DIGEST, NONCE, load_tsa_roots([tsa.untrusted_roots]))
    signature = bytearray(reply)
    signature[-5] ^= 0x01  # inside the ECDSA signature, the token's last field
    with pytest.raises(LedgerRejected, match=r"does not verify .*signature failure"):
        read_reply(bytes(signature), DIGEST, NONCE, roots)
    # an imprint changed in the signed TSTInfo, and claimed: the CMS signature catches it
    forged = bytes([DIGEST[0] ^ 0x80]) + DIGEST[1:]
    assert reply.count(DIGEST) == 1
    with pytest.raises(LedgerRejected, match="does not verify"):
        read_reply(reply.replace(DIGEST, forged), forged, NONCE, roots)


def overrun_last_certificate(token: bytes, tsa: TestTsa) -> bytes:
    """The token with its last certificate claiming 256 bytes more than the SET holds."""
    start, held = embedded_order(token, chain_ders(tsa))
    last = start + len(held[0]) + len(held[1])
    assert token[last : last + 2] == b"\x30\x82"
    length = int.from_bytes(token[last + 2 : last + 4], "big") + 0x100
    return token[: last + 2] + length.to_bytes(2, "big") + token[last + 4 :]


def test_a_malformed_certificates_set_is_refused_with_a_clear_message(tsa: TestTsa) -> None:
    roots = load_tsa_roots([tsa.roots])
    reply = chain_reply(tsa)
    _, token = der_sorted_reply(reply)
    assert token is not None
    bad = overrun_last_certificate(token, tsa)
    with pytest.raises(AnchorCheckError) as caught:
        verify_token(bad, DIGEST, roots)
    message = str(caught.value)
    assert message.startswith("the token is not a DER RFC 3161 TimeStampToken (")
    assert "the SignedData certificates [0] SET OF at offset" in message
    assert "is malformed: element 3 at offset" in message
    assert "but only" in message and "remain in its container" in message
    with pytest.raises(LedgerUnavailable, match=r"certificates \[0\] SET OF .* is malformed"):
        read_reply(reply[: len(reply) - len(token)] + bad, DIGEST, NONCE, roots)


def _trust(cfg: Path) -> Path:
    path = cfg.parent / "trust.txt"
    path.write_text(f"key {load_device_key(load_config(cfg).key_file).vkey}\n")
    return path


def test_a_station_anchors_to_the_chained_tsa_and_ledger_verify_verifies_it(
    tsa: TestTsa, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = make_station(tmp_path, rfc3161_toml(tsa, "chained", fault="chain"))
    gw, rows = asyncio.run(run_station(cfg, lambda g: bool(final_of(g, "rfc3161:chained"))))
    assert gw.ingest is not None
    assert {r.state for r in rows["rfc3161:chained"]} == {"final"}
    assert max(r.checkpoint for r in rows["rfc3161:chained"]) == gw.ingest.log.size
    assert gw.status()["anchors"]["rfc3161:chained"]["last_error"] is None

    trust = _trust(cfg)
    tiles = tmp_path / "bundle.tar"  # the default (v2) bundle
    assert gateway_cli(["export", "--config", str(cfg), "--out", str(tiles)]) == 0
    capsys.readouterr()
    args = ["--tsa-roots", str(tsa.roots), "--trust", str(trust), "--json"]
    assert ledger_verify([str(tiles), *args]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert doc["verified"] and doc["level"] == "verified", doc["failures"]

    out = tmp_path / "bundle.json"  # v1, one JSON document: its receipts are easy to edit
    assert gateway_cli(["export", "--config", str(cfg), "--out", str(out), "--format", "v1"]) == 0
    capsys.readouterr()
    bundle = Bundle.loads(out.read_text())
    anchors = [a for a in bundle.anchors if a.backend == "rfc3161:chained"]
    assert anchors
    ders = chain_ders(tsa)
    for anchor in anchors:  # each receipt holds the token as the TSA sent it
        token = base64.b64decode(anchor.receipt["token"])
        _, held = embedded_order(token, ders)
        assert held != sorted(held)
    first = base64.b64decode(anchors[0].receipt["token"])
    assert openssl_verifies(first, anchors[0].digest, tsa.roots, tmp_path)

    args = [str(out), *args]
    assert ledger_verify(args) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert doc["verified"] and doc["level"] == "verified", doc["failures"]
    checked = [a for a in doc["anchors"] if a["backend"] == "rfc3161:chained"]
    assert len(checked) == len(anchors)
    assert all(a["ok"] and a["status"] == "verified" for a in checked)
    assert "signed by CN=Riverseal Chained TSA" in checked[0]["detail"]

    # tampered tokens still fail, and a malformed certificates SET is named
    digest0 = anchors[0].digest
    imprint = bytearray(first)
    imprint[first.find(digest0)] ^= 0x80
    signature = bytearray(first)
    signature[-5] ^= 0x01
    for bad, reason in (
        (bytes(signature), "signature failure)"),
        (bytes(imprint), "timestamps imprint"),
        (overrun_last_certificate(first, tsa), "certificates [0] SET OF at offset"),
    ):
        receipt = dict(anchors[0].receipt, token=base64.b64encode(bad).decode())
        receipt.pop("gen_time")  # so that only the token's own checks can catch it
        changed = [
            dataclasses.replace(a, receipt=receipt) if a is anchors[0] else a
            for a in bundle.anchors
        ]
        out.write_text(dataclasses.replace(bundle, anchors=tuple(changed)).dumps())
        assert ledger_verify(args) == EXIT_FAILED
        doc = json.loads(capsys.readouterr().out)
        (got,) = [f["reason"] for f in doc["failures"] if f["check"] == "anchors"]
        assert got.startswith("rfc3161:chained anchor: TSA chained: "), got
        assert reason in got, got


# --- the walker itself, on small hand-made encodings ---


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


SIGNED_DATA = bytes.fromhex("06092a864886f70d010702")


def content_info(certificates: bytes | None, *, crls: bytes = b"") -> bytes:
    """A ContentInfo whose SignedData has the given raw certificates [0] contents."""
    parts = tlv(0x02, b"\x03") + tlv(0x31, b"") + tlv(0x30, tlv(0x06, b"\x2a\x03"))
    if certificates is not None:
        parts += tlv(0xA0, certificates)
    parts += crls + tlv(0x31, tlv(0x30, b"\x02\x01\x01"))
    return tlv(0x30, SIGNED_DATA + tlv(0xA0, tlv(0x30, parts)))


def test_the_walker_sorts_the_set_and_nothing_else() -> None:
    a, b, c = tlv(0x30, b"\x01" * 3), tlv(0x30, b"\x02"), tlv(0x30, b"\x01" * 200)
    token = content_info(c + a + b, crls=tlv(0xA1, tlv(0x30, b"\x09") + tlv(0x30, b"\x01")))
    assert der_sorted_token(token) == content_info(
        b + a + c, crls=tlv(0xA1, tlv(0x30, b"\x09") + tlv(0x30, b"\x01"))
    )  # by whole encodings (b's length octet is smallest); the crls left as they are
    for ordered in (content_info(b + a), content_info(b""), content_info(None)):
        assert der_sorted_token(ordered) == ordered
    # a high tag number element is walked too
    high = bytes([0xBF, 0x81, 0x00, 0x01, 0x00])
    assert der_sorted_token(content_info(high + a)) == content_info(a + high)
    status = tlv(0x30, tlv(0x02, b"\x02"))
    assert der_sorted_reply(tlv(0x30, status)) == (tlv(0x30, status), None)
    token = content_info(a + b)
    assert der_sorted_reply(tlv(0x30, status + token)) == (
        tlv(0x30, status + content_info(b + a)),
        token,
    )


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (content_info(b"\x30\x80\x00\x00"), "indefinite length"),
        (content_info(b"\x30\x81\x05\x00\x00\x00\x00\x00"), "not minimally encoded"),
        (content_info(b"\x30\x82\x00\x81" + b"\x00" * 0x81), "not minimally encoded"),
        (content_info(b"\x30\x05\x00"), "but only 1 remain"),
        (content_info(b"\x30\x02\x00\x00\x30"), "element 2 at offset"),
        (content_info(b"\xbf\x80\x01\x00"), "tag number is not minimally encoded"),
        (content_info(b"\x9f\x05\x00"), "below 31 in the long form"),
        (content_info(b"\x30\x85\x01\x00\x00\x00\x00"), "a length of 5 octets"),
        (content_info(b"") + b"\x00", "1 bytes follow the ContentInfo"),
        (tlv(0x30, tlv(0x06, b"\x2a\x03") + tlv(0xA0, b"")), "not CMS SignedData"),
        (content_info(b"")[:-1], "bytes of contents, but only"),
        (b"", "ContentInfo is missing"),
    ],
)
def test_the_walker_refuses_what_is_not_der(token: bytes, message: str) -> None:
    with pytest.raises(DerError, match=message):
        der_sorted_token(token)
