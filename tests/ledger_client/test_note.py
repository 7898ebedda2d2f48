"""C2SP signed notes: key strings, signing, opening, and malformed input."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from ledger_client import errors
from ledger_client.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from ledger_client.note import Signer, Verifier, key_id, open_note, sign_note, split_note

DASH = "\u2014"
TEXT = "riverseal.example/gw/test\n42\n" + base64.b64encode(bytes(32)).decode() + "\n"

# The worked example of c2sp.org/signed-note (§Example): a vkey and a note it signed.
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n"
    f"{DASH} example.com/foo "
    "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)
# golang.org/x/mod sumdb/note package documentation: a key pair and a note it signed.
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_NOTE = (
    f"{PETER_TEXT}\n{DASH} PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


@pytest.fixture(scope="module")
def keys(shared: Path) -> list[dict[str, Any]]:
    data = json.loads((shared / "testvectors" / "signed-note.json").read_text())
    keys: list[dict[str, Any]] = data["keys"]
    assert len(keys) >= 4
    return keys


def _named(keys: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(k for k in keys if k["vkey"].startswith(name + "+"))


def test_skey_derives_its_vkey(keys: list[dict[str, Any]]) -> None:
    for k in keys:
        signer = Signer.from_skey(k["skey"])
        verifier = Verifier.from_vkey(k["vkey"])
        assert signer.verifier() == verifier
        assert signer.verifier().to_vkey() == k["vkey"]
        assert signer.to_skey() == k["skey"]
        assert verifier.key_id == key_id(verifier.name, verifier.public_key)
        assert k["vkey"].split("+")[1] == verifier.key_id.hex()


def test_sign_and_open(keys: list[dict[str, Any]]) -> None:
    for k in keys:
        note = sign_note(TEXT, Signer.from_skey(k["skey"]))
        assert open_note(note, [Verifier.from_vkey(k["vkey"])]) == TEXT
        assert note.startswith(TEXT + "\n" + DASH + " ")


def test_unknown_signatures_are_ignored(keys: list[dict[str, Any]]) -> None:
    known, unknown = _named(keys, "Known"), _named(keys, "Unknown")
    note = sign_note(TEXT, [Signer.from_skey(unknown["skey"]), Signer.from_skey(known["skey"])])
    assert open_note(note, Verifier.from_vkey(known["vkey"])) == TEXT


def test_several_trusted_signatures(keys: list[dict[str, Any]]) -> None:
    a, b = _named(keys, "Known"), _named(keys, "KnownAgain")
    note = sign_note(TEXT, [Signer.from_skey(a["skey"]), Signer.from_skey(b["skey"])])
    verifiers = [Verifier.from_vkey(a["vkey"]), Verifier.from_vkey(b["vkey"])]
    assert open_note(note, verifiers) == TEXT


def test_no_trusted_signature_is_an_error(keys: list[dict[str, Any]]) -> None:
    known, unknown = _named(keys, "Known"), _named(keys, "Unknown")
    note = sign_note(TEXT, Signer.from_skey(unknown["skey"]))
    with pytest.raises(errors.SignatureError, match="no signature by a trusted key"):
        open_note(note, [Verifier.from_vkey(known["vkey"])])
    with pytest.raises(errors.SignatureError):
        open_note(note, [])


def test_a_failing_trusted_signature_is_an_error(keys: list[dict[str, Any]]) -> None:
    a, b = _named(keys, "Known"), _named(keys, "KnownAgain")
    good = sign_note(TEXT, [Signer.from_skey(a["skey"]), Signer.from_skey(b["skey"])])
    tampered = good.replace("\n42\n", "\n43\n")
    with pytest.raises(errors.SignatureError, match="does not verify"):
        open_note(tampered, [Verifier.from_vkey(a["vkey"])])
    # One good trusted signature does not excuse a bad one from another trusted key.
    lines = good.split("\n")
    sig_b = lines[-2]
    name, b64 = sig_b.split(" ")[1:]
    raw = bytearray(base64.b64decode(b64))
    raw[10] ^= 1
    lines[-2] = f"{DASH} {name} {base64.b64encode(bytes(raw)).decode()}"
    half_bad = "\n".join(lines)
    verifiers = [Verifier.from_vkey(a["vkey"]), Verifier.from_vkey(b["vkey"])]
    with pytest.raises(errors.SignatureError):
        open_note(half_bad, verifiers)
    assert open_note(half_bad, [verifiers[0]]) == TEXT


def test_spec_example_opens() -> None:
    verifier = Verifier.from_vkey(SPEC_VKEY)
    assert verifier.key_id.hex() == "530d903a"
    assert verifier.to_vkey() == SPEC_VKEY
    assert open_note(SPEC_NOTE, [verifier]) == "This is an example message.\n"


def test_go_note_example() -> None:
    signer = Signer.from_skey(PETER_SKEY)
    assert signer.verifier().to_vkey() == PETER_VKEY
    assert open_note(PETER_NOTE, [Verifier.from_vkey(PETER_VKEY)]) == PETER_TEXT
    # Ed25519 is deterministic: signing again gives the same note.
    assert sign_note(PETER_TEXT, signer) == PETER_NOTE


@pytest.mark.parametrize(
    "vkey",
    [
        "",
        "nameonly",
        "name+530d903a",
        "name+zzzzzzzz+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        "example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",  # wrong ID
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2",  # bad base64
        "example.com/foo+530d903a+AukyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",  # not type 1
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2kAA==",  # long
        "exa mple+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        "+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
    ],
)
def test_malformed_vkeys(vkey: str) -> None:
    with pytest.raises(errors.MalformedNote):
        Verifier.from_vkey(vkey)


@pytest.mark.parametrize(
    "skey",
    [
        "",
        "PRIVATE+KEY+",
        "PRIVATE+KEY+PeterNeumann+c74f20a3",
        "PRIVATE+KEY+PeterNeumann+c74f20a4+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDF",
        "PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
    ],
)
def test_malformed_skeys(skey: str) -> None:
    with pytest.raises(errors.MalformedNote):
        Signer.from_skey(skey)


@pytest.mark.parametrize(
    "note",
    [
        pytest.param("", id="empty"),
        pytest.param("text\n", id="no-signatures"),
        pytest.param("text\n\n", id="empty-signature-block"),
        pytest.param("text\n\n— \n", id="no-name"),
        pytest.param(f"text\n\n{DASH} name\n", id="no-signature"),
        pytest.param(f"text\n\n{DASH} name AAAA\n", id="signature-too-short"),
        pytest.param(f"text\n\n{DASH} name !!!!!!!!\n", id="not-base64"),
        pytest.param(f"text\n\n- name {'A' * 92}\n", id="hyphen-not-em-dash"),
        pytest.param(f"text\n\n{DASH} name {'A' * 92}", id="no-final-newline"),
        pytest.param(f"text\n\n{DASH} name {'A' * 92} extra\n", id="extra-field"),
        pytest.param(f"te\txt\n\n{DASH} name {'A' * 92}\n", id="control-character"),
        pytest.param("text\n\n" + f"{DASH} name {'A' * 92}\n" * 101, id="too-many-signatures"),
    ],
)
def test_malformed_notes(note: str) -> None:
    verifier = Verifier.from_vkey(SPEC_VKEY)
    with pytest.raises(errors.MalformedNote):
        open_note(note, [verifier])


def test_split_note_returns_the_signatures() -> None:
    text, sigs = split_note(SPEC_NOTE)
    assert text == "This is an example message.\n"
    assert [(name, kid.hex()) for name, kid, _ in sigs] == [("example.com/foo", "530d903a")]


def test_sign_note_refuses_bad_text() -> None:
    signer = Signer.from_skey(PETER_SKEY)
    with pytest.raises(errors.MalformedNote):
        sign_note("no newline", signer)
    with pytest.raises(ValueError, match="at least one signer"):
        sign_note("text\n", [])


def test_checkpoint_round_trip() -> None:
    signer = Signer.from_seed("riverseal.example/gw/test", bytes(32))
    cp = Checkpoint("riverseal.example/gw/test", 42, bytes(range(32)))
    note = sign_checkpoint(cp, signer)
    assert note.startswith(cp.body())
    assert open_checkpoint(note, [signer.verifier()]) == cp
    assert Checkpoint.parse(cp.body()) == cp
    assert len(cp.digest()) == 32


@pytest.mark.parametrize(
    "body",
    [
        "origin\n42\n",
        "origin\n42\nAAAA\n",
        "origin\n042\n" + base64.b64encode(bytes(32)).decode() + "\n",
        "origin\n-1\n" + base64.b64encode(bytes(32)).decode() + "\n",
        "origin\n\u00b2\n" + base64.b64encode(bytes(32)).decode() + "\n",
        "origin\n\u0663\n" + base64.b64encode(bytes(32)).decode() + "\n",
        "origin\n" + "1" * 5000 + "\n" + base64.b64encode(bytes(32)).decode() + "\n",
        "origin\n42\n" + base64.b64encode(bytes(32)).decode(),
        "\n42\n" + base64.b64encode(bytes(32)).decode() + "\n",
        "origin\n42\n" + base64.b64encode(bytes(32)).decode() + "\n\n",
    ],
)
def test_malformed_checkpoint_bodies(body: str) -> None:
    with pytest.raises(errors.MalformedNote):
        Checkpoint.parse(body)
