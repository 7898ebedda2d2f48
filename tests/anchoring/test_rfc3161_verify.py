"""``ledger-verify --tsa-roots``: rfc3161 anchors checked against the regulator's TSA roots.

The bundle comes from a real log anchored by the real openssl TSA; the bad
variants are that bundle with one receipt swapped or altered.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.anchoring.anchorer import Anchorer
from gateway.anchoring.rfc3161 import Rfc3161Backend
from gateway.export import export_bundle
from gateway.keys import create_device_key
from gateway.log import Log
from gateway.pipeline import Reading, Value
from gateway.store import Store
from ledger_client.bundle import AnchorReceipt, Bundle
from ledger_client.checkpoint import Checkpoint
from ledger_client.cli import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNDATED,
    EXIT_UNREADABLE,
    EXIT_UNTRUSTED,
)
from ledger_client.cli import main as ledger_verify
from ledger_client.note import split_note
from ledger_client.tsa import load_tsa_roots
from tests.servers.tsa_server import OPENSSL, TestTsa


async def anchored_bundle(tmp_path: Path, tsa: TestTsa, fault: str, roots: Path) -> Bundle:
    """Two checkpoints (sizes 3 and 6), each stamped by TSA "tsa-a" at ``fault``."""
    b = Rfc3161Backend("tsa-a", tsa.url(fault), load_tsa_roots([roots]))
    async with Store(tmp_path / "log.sqlite") as store:
        log = Log(store, create_device_key(tmp_path / "device.key"))
        await log.open()
        anchorer = Anchorer(store, [b])
        for _ in range(2):
            now = time.time_ns()
            await log.append(
                [Reading("probe-1", (Value("pH", 7.1, "pH"),), now + i) for i in range(3)],
                checkpoint=True,
            )
            await anchorer.step()
        await b.aclose()
        bundle = await export_bundle(log)
    assert [(a.checkpoint, a.state) for a in bundle.anchors] == [(3, "final"), (6, "final")]
    return bundle


@pytest.fixture
async def good(tmp_path: Path, tsa: TestTsa) -> Bundle:
    return await anchored_bundle(tmp_path, tsa, "tsa", tsa.roots)


def run(
    tmp_path: Path, bundle: Bundle, *roots: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, Any]]:
    path = tmp_path / "bundle.json"
    path.write_text(bundle.dumps())
    trust = tmp_path / "trust.txt"  # the regulator holds the device key
    trust.write_text("".join(f"key {k.vkey}\n" for k in bundle.keys))
    args = [str(path), "--json", "--trust", str(trust)]
    for r in roots:
        args += ["--tsa-roots", str(r)]
    code = ledger_verify(args)
    return code, json.loads(capsys.readouterr().out)


def with_receipt(
    bundle: Bundle, n: int, change: Callable[[AnchorReceipt], AnchorReceipt]
) -> Bundle:
    anchors = list(bundle.anchors)
    anchors[n] = change(anchors[n])
    return dataclasses.replace(bundle, anchors=tuple(anchors))


def test_good_tokens_verify_and_date_the_entries(
    good: Bundle, tsa: TestTsa, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = run(tmp_path, good, tsa.roots, capsys=capsys)
    assert code == EXIT_OK, doc["failures"]
    gen_times = [a.receipt["gen_time"] for a in good.anchors]
    assert [(a["backend"], a["ok"], a["time"]) for a in doc["anchors"]] == [
        ("rfc3161:tsa-a", True, gen_times[0]),
        ("rfc3161:tsa-a", True, gen_times[1]),
    ]
    assert "signed by CN=Riverseal Test TSA" in doc["anchors"][0]["detail"]
    # each entry is dated by the genTime of the first checkpoint covering it (runs of
    # entries with one time are merged, so compare entry by entry)
    dated = {
        i: (r["time"], r["backend"])
        for r in doc["recorded_by"]
        for i in range(r["first"], r["last"] + 1)
    }
    assert dated == {i: (gen_times[i // 3], "rfc3161:tsa-a") for i in range(6)}
    assert doc["level"] == "verified"
    # without roots the same receipts are present but unchecked, never verified
    code, doc = run(tmp_path, good, capsys=capsys)
    assert code == EXIT_UNDATED and doc["level"] == "authentic-undated"
    assert {a["status"] for a in doc["anchors"]} == {"present but unchecked (offline)"}
    assert doc["recorded_by"] == []


def test_openssl_agrees_on_the_receipt_format(good: Bundle, tsa: TestTsa, tmp_path: Path) -> None:
    """docs/bundle-format.md: the token verifies with openssl for the checkpoint digest."""
    bodies = {Checkpoint.parse(split_note(n)[0]).size: split_note(n)[0] for n in good.checkpoints}
    for anchor in good.anchors:
        token = tmp_path / f"token-{anchor.checkpoint}.der"
        token.write_bytes(base64.b64decode(anchor.receipt["token"]))
        body = tmp_path / f"checkpoint-{anchor.checkpoint}.txt"
        body.write_bytes(bodies[anchor.checkpoint].encode())
        for what in (["-digest", anchor.digest.hex()], ["-data", str(body)]):
            done = subprocess.run(
                [OPENSSL, "ts", "-verify", *what, "-in", str(token), "-token_in",
                 "-CAfile", str(tsa.roots)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert "Verification: OK" in done.stdout
        other = subprocess.run(  # and refuses it for another checkpoint
            [OPENSSL, "ts", "-verify", "-digest", "00" * 32, "-in", str(token), "-token_in",
             "-CAfile", str(tsa.roots)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert other.returncode != 0


def failures(doc: dict[str, Any]) -> list[str]:
    return [f["reason"] for f in doc["failures"] if f["check"] == "anchors"]


async def test_a_token_from_an_untrusted_tsa_fails(
    tmp_path: Path, tsa: TestTsa, capsys: pytest.CaptureFixture[str]
) -> None:
    # a station that (wrongly) trusted the second authority accepted its tokens
    bundle = await anchored_bundle(tmp_path, tsa, "untrusted", tsa.untrusted_roots)
    code, doc = run(tmp_path, bundle, tsa.roots, capsys=capsys)
    assert code == EXIT_FAILED
    reasons = failures(doc)
    assert len(reasons) == 2  # both checkpoints' anchors
    for reason in reasons:
        assert reason.startswith("rfc3161:tsa-a anchor: TSA tsa-a: the token does not verify")
        assert "chain does not verify (unable to get local issuer certificate)" in reason
    assert doc["recorded_by"] == []
    # a regulator who does trust that authority accepts them
    code, doc = run(tmp_path, bundle, tsa.untrusted_roots, capsys=capsys)
    assert code == EXIT_OK, doc["failures"]


@pytest.mark.parametrize("where", ["signature", "gen_time", "imprint"])
def test_a_tampered_token_fails(
    good: Bundle, tsa: TestTsa, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    token = bytearray(base64.b64decode(good.anchors[0].receipt["token"]))
    if where == "signature":
        token[-5] ^= 0x01  # inside the ECDSA signature, the last field of the token
    elif where == "gen_time":
        # GeneralizedTime YYYYMMDDhhmmssZ; the certificates' UTCTimes have two-digit years
        at = token.find(good.anchors[0].receipt["gen_time"][:10].replace("-", "").encode())
        assert at > 0
        token[at + 3] = ord("9") if token[at + 3] != ord("9") else ord("8")  # another year
    else:
        at = token.find(good.anchors[0].digest)
        token[at] ^= 0x80

    def tamper(a: AnchorReceipt) -> AnchorReceipt:
        receipt = dict(a.receipt, token=base64.b64encode(bytes(token)).decode())
        receipt.pop("gen_time")  # so that only the token's own checks can catch it
        return dataclasses.replace(a, receipt=receipt)

    code, doc = run(tmp_path, with_receipt(good, 0, tamper), tsa.roots, capsys=capsys)
    assert code == EXIT_FAILED
    (reason,) = failures(doc)
    assert reason.startswith("rfc3161:tsa-a anchor: TSA tsa-a: ")
    if where == "imprint":
        assert "timestamps imprint" in reason
    else:
        assert "CMS signature or certificate chain does not verify" in reason
        assert reason.endswith("signature failure)")
    assert [a["ok"] for a in doc["anchors"]] == [False, True]


def test_a_token_for_another_checkpoint_fails(
    good: Bundle, tsa: TestTsa, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    later = good.anchors[1]
    swapped = with_receipt(good, 0, lambda a: dataclasses.replace(a, receipt=later.receipt))
    code, doc = run(tmp_path, swapped, tsa.roots, capsys=capsys)
    assert code == EXIT_FAILED
    (reason,) = failures(doc)
    assert (
        f"TSA tsa-a: the token timestamps imprint {later.digest.hex()}, "
        f"not this checkpoint's digest {good.anchors[0].digest.hex()}"
    ) in reason


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"token": "not base64!"}, "the receipt's token is not base64"),
        ({"token": None}, "the receipt holds no token"),
        ({"tsa": "tsa-b"}, "the receipt names TSA 'tsa-b', not 'tsa-a'"),
        ({"gen_time": "2001-01-01T00:00:00.000000Z"}, "gen_time '2001-01-01T00:00:00.000000Z'"),
        ({"token": base64.b64encode(b"\x30\x03\x02\x01\x00").decode()}, "not a DER RFC 3161"),
    ],
)
def test_a_broken_receipt_fails(
    good: Bundle,
    tsa: TestTsa,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, Any],
    reason: str,
) -> None:
    def edit(a: AnchorReceipt) -> AnchorReceipt:
        receipt = {k: v for k, v in {**a.receipt, **change}.items() if v is not None}
        return dataclasses.replace(a, receipt=receipt)

    code, doc = run(tmp_path, with_receipt(good, 1, edit), tsa.roots, capsys=capsys)
    assert code == EXIT_FAILED
    (got,) = failures(doc)
    assert got.startswith("rfc3161:tsa-a anchor: TSA tsa-a: ")
    assert reason in got


def test_unreadable_roots_are_exit_2(
    good: Bundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bundle.json"
    path.write_text(good.dumps())
    not_pem = tmp_path / "roots.txt"
    not_pem.write_text("these are not certificates\n")
    for roots, message in (
        (tmp_path / "missing.pem", "cannot read TSA roots"),
        (not_pem, "not PEM certificates"),
    ):
        assert ledger_verify([str(path), "--tsa-roots", str(roots)]) == EXIT_UNREADABLE
        err = capsys.readouterr().err
        assert err.startswith("ledger-verify: ")
        assert message in err
        assert str(roots) in err


def test_the_receipts_gen_time_is_compared_as_an_instant(
    good: Bundle, tsa: TestTsa, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stated = good.anchors[0].receipt["gen_time"]
    assert stated.endswith(".000000Z")  # the test TSA stamps whole seconds
    short = stated.removesuffix(".000000Z") + "Z"

    def edit(a: AnchorReceipt) -> AnchorReceipt:
        return dataclasses.replace(a, receipt=dict(a.receipt, gen_time=short))

    code, doc = run(tmp_path, with_receipt(good, 0, edit), tsa.roots, capsys=capsys)
    assert code == EXIT_OK, doc["failures"]


def test_without_rfc3161_client_the_roots_option_says_what_to_install(
    good: Bundle, tsa: TestTsa, tmp_path: Path
) -> None:
    """A regulator's plain install (PyNaCl only) gets a clear exit 2, not a traceback."""
    path = tmp_path / "bundle.json"
    path.write_text(good.dumps())
    probe = (
        "import sys; sys.modules['rfc3161_client'] = None; "  # as if not installed
        "from ledger_client.cli import main; "
        f"sys.exit(main([{str(path)!r}, '--tsa-roots', {str(tsa.roots)!r}]))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == EXIT_UNREADABLE, done.stderr
    assert "pip install 'riverseal[online]'" in done.stderr
    assert "Traceback" not in done.stderr
    # and the same bundle still verifies offline without the option
    offline = subprocess.run(
        [sys.executable, "-c", probe.replace(f", '--tsa-roots', {str(tsa.roots)!r}", "")],
        capture_output=True,
        text=True,
    )
    assert offline.returncode == EXIT_UNTRUSTED, offline.stdout + offline.stderr
