"""The TimeStampReq we write and the replies we accept, against the real openssl TSA.

The request encoder is checked against two independent implementations:
rfc3161-client's own builder (byte for byte) and ``openssl ts -query -text``.
"""

from __future__ import annotations

import hashlib
import subprocess

import pytest
from rfc3161_client import HashAlgorithm, TimestampRequestBuilder

from gateway.anchoring.rfc3161_messages import read_reply, timestamp_request
from gateway.errors import LedgerRejected, LedgerUnavailable
from ledger_client.tsa import load_tsa_roots
from tests.servers.tsa_server import OPENSSL, TestTsa

BODY = b"riverseal.example/gw/0a1b2c\n7\nq2bRsrAd2Lz6Gc+mGWU4SZz+dfmoVbkp1XSjaP8LQCA=\n"
DIGEST = hashlib.sha256(BODY).digest()


def test_request_is_byte_identical_to_rfc3161_clients() -> None:
    for _ in range(20):  # random nonces of every length the library draws
        theirs = TimestampRequestBuilder().data(BODY).hash_algorithm(HashAlgorithm.SHA256).build()
        assert theirs.nonce is not None
        assert timestamp_request(DIGEST, theirs.nonce) == theirs.as_bytes()


@pytest.mark.parametrize("nonce", [0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x8000, 2**63, 2**64 - 1])
def test_openssl_reads_our_request(nonce: int) -> None:
    text = subprocess.run(
        [OPENSSL, "ts", "-query", "-in", "/dev/stdin", "-text"],
        input=timestamp_request(DIGEST, nonce),
        capture_output=True,
        check=True,
    ).stdout.decode()
    assert "Hash Algorithm: sha256" in text
    (nonce_line,) = (line for line in text.splitlines() if line.startswith("Nonce: 0x"))
    assert int(nonce_line.removeprefix("Nonce: 0x"), 16) == nonce
    assert "Certificate required: yes" in text
    hex_dump = "".join(
        line.split(" - ")[1].split("   ")[0].replace("-", "").replace(" ", "")
        for line in text.splitlines()
        if " - " in line
    )
    assert hex_dump == DIGEST.hex()


def test_request_refuses_a_digest_of_the_wrong_size() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        timestamp_request(DIGEST[:31], 1)
    with pytest.raises(ValueError, match="negative"):
        timestamp_request(DIGEST, -1)


def test_a_good_reply_is_accepted_and_says_who_signed(tsa: TestTsa) -> None:
    roots = load_tsa_roots([tsa.roots])
    stamp = read_reply(tsa.stamp(timestamp_request(DIGEST, 4242)), DIGEST, 4242, roots)
    assert stamp.facts.nonce == 4242
    assert stamp.facts.signer == "CN=Riverseal Test TSA"
    assert stamp.facts.policy == "1.3.6.1.4.1.55555.1.1"
    assert stamp.facts.accuracy_s == 1.0
    # the stored token is what openssl itself verifies for this digest
    token = tsa.trusted.dir / "token.der"
    token.write_bytes(stamp.token)
    done = subprocess.run(
        [OPENSSL, "ts", "-verify", "-digest", DIGEST.hex(), "-in", str(token), "-token_in",
         "-CAfile", str(tsa.roots)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Verification: OK" in done.stdout


def test_replies_that_are_not_ours_are_refused(tsa: TestTsa) -> None:
    roots = load_tsa_roots([tsa.roots])
    query = timestamp_request(DIGEST, 99)
    good = tsa.stamp(query)
    with pytest.raises(LedgerUnavailable, match="nonce 99 is not ours \\(100\\)"):
        read_reply(good, DIGEST, 100, roots)
    other = hashlib.sha256(b"another checkpoint\n").digest()
    with pytest.raises(LedgerUnavailable, match=f"another imprint .*{other.hex()}"):
        read_reply(good, other, 99, roots)
    with pytest.raises(LedgerUnavailable, match="not an RFC 3161 TimeStampResp"):
        read_reply(good[:-10], DIGEST, 99, roots)
    with pytest.raises(LedgerRejected, match="does not verify"):
        read_reply(tsa.stamp(query, tsa.untrusted), DIGEST, 99, roots)
    # the same token is accepted by a station that trusts the other root
    assert read_reply(
        tsa.stamp(query, tsa.untrusted), DIGEST, 99, load_tsa_roots([tsa.untrusted_roots])
    ).facts.signer == ("CN=Untrusted Test TSA")
