"""simulators/tsa.py: the local RFC 3161 authority's tokens verify (openssl, ledger_client)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import subprocess
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from rfc3161_client import decode_timestamp_response

from gateway.anchoring.rfc3161_messages import timestamp_request
from ledger_client.bundle import AnchorReceipt
from ledger_client.errors import AnchorCheckError
from ledger_client.tsa import TsaChecker, load_tsa_roots
from simulators.tsa import LocalTsa, OpensslMissing

BODY = b"riverseal checkpoint body\n42\n"
DIGEST = hashlib.sha256(BODY).digest()


def post(url: str, body: bytes, ctype: str = "application/timestamp-query") -> bytes:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": ctype})
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.headers["Content-Type"] == "application/timestamp-reply"
        data: bytes = reply.read()
        return data


def openssl_verify(reply: Path, digest: bytes, roots: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "ts", "-verify", "-digest", digest.hex(), "-in", str(reply),
         "-CAfile", str(roots)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_a_token_verifies_with_openssl_and_with_ledger_client(tmp_path: Path) -> None:
    with LocalTsa("Test Local TSA") as tsa:
        reply = post(tsa.url, timestamp_request(DIGEST, nonce=1234567))
        roots = tmp_path / "roots.pem"
        roots.write_bytes(tsa.roots_pem.read_bytes())
        tsa_cert = x509.load_pem_x509_certificate(tsa.tsa_cert_pem.read_bytes())
    (tmp_path / "reply.tsr").write_bytes(reply)

    # openssl, knowing nothing of riverseal: the right digest passes, another fails.
    ok = openssl_verify(tmp_path / "reply.tsr", DIGEST, roots)
    assert ok.returncode == 0, ok.stderr
    assert "Verification: OK" in ok.stdout
    other = hashlib.sha256(BODY + b"x").digest()
    assert openssl_verify(tmp_path / "reply.tsr", other, roots).returncode != 0

    # The TSA certificate: id-kp-timeStamping, critical, issued by the root.
    eku = tsa_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical
    assert list(eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
    assert tsa_cert.subject.rfc4514_string() == "CN=Test Local TSA"
    assert tsa_cert.issuer.rfc4514_string() == "CN=Test Local TSA Root"

    # ledger_client's checker, on the receipt the gateway would record.
    resp = decode_timestamp_response(reply)
    assert resp.status == 0
    assert resp.tst_info.nonce == 1234567
    token = resp.time_stamp_token()
    checker = TsaChecker(load_tsa_roots([roots]))

    def receipt(digest: bytes) -> AnchorReceipt:
        return AnchorReceipt(
            5,
            "rfc3161:local",
            digest,
            "final",
            {"tsa": "local", "token": base64.b64encode(token).decode()},
        )

    evidence = checker.check(receipt(DIGEST))
    assert abs(evidence.time - datetime.now(UTC)) < timedelta(seconds=30)
    assert "signed by CN=Test Local TSA" in evidence.detail
    with pytest.raises(AnchorCheckError, match="not this checkpoint's digest"):
        checker.check(receipt(other))


def test_a_root_of_another_run_does_not_vouch_for_its_tokens(tmp_path: Path) -> None:
    with LocalTsa() as first:
        reply = post(first.url, timestamp_request(DIGEST, nonce=7))
    with LocalTsa() as second:
        roots = tmp_path / "other.pem"
        roots.write_bytes(second.roots_pem.read_bytes())
    token = decode_timestamp_response(reply).time_stamp_token()
    receipt = AnchorReceipt(
        1, "rfc3161:local", DIGEST, "final", {"token": base64.b64encode(token).decode()}
    )
    with pytest.raises(AnchorCheckError, match="does not verify against"):
        TsaChecker(load_tsa_roots([roots])).check(receipt)
    (tmp_path / "reply.tsr").write_bytes(reply)
    assert openssl_verify(tmp_path / "reply.tsr", DIGEST, roots).returncode != 0


def test_what_is_not_a_query_gets_no_token() -> None:
    with LocalTsa() as tsa:
        with pytest.raises(urllib.error.HTTPError) as wrong_type:
            post(tsa.url, timestamp_request(DIGEST, nonce=1), ctype="text/plain")
        wrong_type.value.close()
        assert wrong_type.value.code == 415
        with pytest.raises(urllib.error.HTTPError) as elsewhere:
            post(tsa.url + "other", timestamp_request(DIGEST, nonce=1))
        elsewhere.value.close()
        assert elsewhere.value.code == 404
        # openssl's own answer to a malformed query: status "rejection", no token
        refused = decode_timestamp_response(post(tsa.url, b"\x30\x03\x02\x01\x01"))
        assert refused.status == 2


def test_async_use_and_cleanup() -> None:
    async def go() -> tuple[Path, str]:
        async with LocalTsa() as tsa:
            reply = await asyncio.to_thread(post, tsa.url, timestamp_request(DIGEST, nonce=9))
            assert decode_timestamp_response(reply).status == 0
            return tsa.roots_pem.parent, tsa.url

    folder, url = asyncio.run(go())
    assert not folder.exists()  # keys and certificates removed
    with pytest.raises(urllib.error.URLError):
        post(url, timestamp_request(DIGEST, nonce=10))  # nothing listens any more


def test_without_openssl_it_says_so(tmp_path: Path) -> None:
    with pytest.raises(OpensslMissing, match="needs the openssl command line"):
        LocalTsa(openssl=str(tmp_path / "no-openssl")).start()


def test_a_fraction_of_a_second_in_gen_time_is_kept(tmp_path: Path) -> None:
    """rfc3161-client drops genTime's fraction; the verifier reads it from the signed
    TSTInfo, so "recorded no later than" is never earlier than the TSA's time."""
    from ledger_client.der_sets import token_gen_time
    from ledger_client.tsa import load_tsa_roots, verify_token

    with LocalTsa() as tsa:
        cnf = Path(tsa.roots_pem).parent / "tsa.cnf"
        cnf.write_text(
            cnf.read_text().replace("accuracy ", "clock_precision_digits = 3\naccuracy ", 1)
        )
        digest = hashlib.sha256(b"checkpoint body").digest()
        query = subprocess.run(
            ["openssl", "ts", "-query", "-digest", digest.hex(), "-sha256", "-cert"],
            capture_output=True,
            check=True,
        ).stdout
        (tmp_path / "q.tsq").write_bytes(query)
        token = subprocess.run(
            ["openssl", "ts", "-reply", "-config", str(cnf), "-queryfile", str(tmp_path / "q.tsq"),
             "-token_out"],
            capture_output=True,
            check=True,
            cwd=cnf.parent,
        ).stdout  # fmt: skip
        shown = subprocess.run(
            ["openssl", "ts", "-reply", "-in", "/dev/stdin", "-token_in", "-text"],
            input=token,
            capture_output=True,
            check=True,
        ).stdout.decode()
        # openssl prints the fraction without its trailing zeros: .82 is 820 ms, and a
        # whole second has no fraction at all.
        stamp = re.search(r"Time stamp: \w+ +\d+ \d\d:\d\d:\d\d(?:\.(\d{1,3}))? ", shown)
        assert stamp is not None, shown
        millis = int((stamp.group(1) or "0").ljust(3, "0"))
        facts = verify_token(token, digest, load_tsa_roots([Path(tsa.roots_pem)]))
    assert facts.gen_time == token_gen_time(token)
    assert facts.gen_time.microsecond == millis * 1000
