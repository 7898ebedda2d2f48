"""The witness logic against C2SP tlog-witness and tlog-cosignature (pure, no IO)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
from pathlib import Path

import pytest

from ledger_client.checkpoint import Checkpoint, sign_checkpoint
from ledger_client.errors import MalformedNote, SignatureError
from ledger_client.merkle import MerkleTree
from ledger_client.note import Signer, Verifier, split_note
from ledger_client.witness import (
    MAX_PROOF_LINES,
    AddCheckpoint,
    Cosigned,
    Refused,
    WitnessKey,
    WitnessSigner,
    WitnessState,
    cosign,
    cosignature_message,
    cosignatures,
    decide,
    origin_of,
    parse_conflict_size,
    parse_cosign_response,
)

ORIGIN = "riverseal.example/gw/0a1b2c"
NOW = 1_790_000_000
VECTORS = Path("/work/shared/testvectors/signed-note.json")


@pytest.fixture
def log_key() -> Signer:
    return Signer.from_seed(ORIGIN, bytes(range(32)))


@pytest.fixture
def witness() -> WitnessSigner:
    return WitnessSigner.from_skey(WitnessSigner.generate("witness.example/w1").to_skey())


def tree(n: int, tag: bytes = b"e") -> MerkleTree:
    return MerkleTree(tag + str(i).encode() for i in range(n))


def note_of(t: MerkleTree, size: int, key: Signer) -> str:
    return sign_checkpoint(Checkpoint(ORIGIN, size, t.root(size)), key)


def request(t: MerkleTree, old: int, new: int, key: Signer) -> bytes:
    proof = t.consistency_proof(old, new) if old else []
    return AddCheckpoint(old, tuple(proof), note_of(t, new, key)).encode()


def run(
    data: bytes, key: Signer, witness: WitnessSigner, stored: WitnessState | None
) -> Cosigned | Refused:
    return decide(data, logs={ORIGIN: [key.verifier()]}, stored=stored, signer=witness, now=NOW)


def test_cosignature_line_layout_and_message(witness: WitnessSigner) -> None:
    body = Checkpoint(ORIGIN, 5, tree(5).root()).body()
    line = cosign(witness, body, NOW)
    dash, name, b64 = line[:-1].split(" ")
    assert dash == "\u2014" and name == witness.name and line.endswith("\n")
    raw = base64.b64decode(b64)
    assert len(raw) == 4 + 8 + 64
    pub = bytes(witness.signing_key.verify_key)
    assert raw[:4] == hashlib.sha256(witness.name.encode() + b"\n\x04" + pub).digest()[:4]
    assert struct.unpack(">Q", raw[4:12]) == (NOW,)
    message = cosignature_message(body, NOW)
    assert message == f"cosignature/v1\ntime {NOW}\n{body}".encode()
    witness.signing_key.verify_key.verify(message, raw[12:])  # raises if wrong
    vkey = witness.key.to_vkey()
    assert base64.b64decode(vkey.split("+", 2)[2])[0] == 0x04
    assert WitnessKey.from_vkey(vkey) == witness.key


def test_log_vkeys_are_not_witness_keys() -> None:
    vectors = json.loads(VECTORS.read_text())["keys"]
    for v in vectors:
        with pytest.raises(MalformedNote, match="type 0x04"):
            WitnessKey.from_vkey(v["vkey"])
        # The same seed as a witness key: the type byte changes the key ID.
        log = Signer.from_skey(v["skey"])
        w = WitnessSigner(log.name, log.signing_key)
        assert WitnessSigner.from_skey(w.to_skey()).key == w.key
        assert w.key.public_key == log.public_key
        assert w.key.key_id != log.key_id


def test_cosignatures_ignore_unknown_and_flag_bad(log_key: Signer, witness: WitnessSigner) -> None:
    t = tree(7)
    note = note_of(t, 7, log_key)
    other = WitnessSigner.generate("witness.example/w2")
    body = split_note(note)[0]
    cosigned = note + cosign(witness, body, NOW) + cosign(other, body, NOW + 1)
    found, problems = cosignatures(cosigned, [witness.key])
    assert [(c.witness, c.timestamp) for c in found] == [(witness.key, NOW)]
    assert problems == []
    # A line by the witness over another body (here: another time claimed) fails.
    line = cosign(witness, body, NOW)
    raw = bytearray(base64.b64decode(line.split(" ")[2]))
    raw[4:12] = struct.pack(">Q", NOW + 5)
    forged = f"\u2014 {witness.name} {base64.b64encode(bytes(raw)).decode()}\n"
    found, problems = cosignatures(note + forged, [witness.key])
    assert found == [] and problems == [f"cosignature by {witness.name} does not verify"]
    # The log verifier still opens the cosigned note: unknown lines are ignored.
    assert Checkpoint.parse(split_note(cosigned)[0]).size == 7


def test_good_add_from_nothing_then_consistent(log_key: Signer, witness: WitnessSigner) -> None:
    t = tree(40)
    first = run(request(t, 0, 10, log_key), log_key, witness, None)
    assert isinstance(first, Cosigned)
    assert first.state == WitnessState(ORIGIN, 10, t.root(10))
    c = parse_cosign_response(first.lines.encode(), note_of(t, 10, log_key), witness.key)
    assert c.timestamp == NOW
    second = run(request(t, 10, 40, log_key), log_key, witness, first.state)
    assert isinstance(second, Cosigned) and second.state.size == 40
    same = run(request(t, 40, 40, log_key), log_key, witness, second.state)
    assert isinstance(same, Cosigned) and same.state == second.state


def test_409_names_the_size_held(log_key: Signer, witness: WitnessSigner) -> None:
    t = tree(30)
    held = WitnessState(ORIGIN, 12, t.root(12))
    out = run(request(t, 0, 30, log_key), log_key, witness, held)
    assert isinstance(out, Refused) and out.status == 409 and out.size == 12
    assert parse_conflict_size(out.body()) == 12
    out = run(request(t, 20, 30, log_key), log_key, witness, None)
    assert isinstance(out, Refused) and (out.status, out.size) == (409, 0)


def test_bad_proof_422(log_key: Signer, witness: WitnessSigner) -> None:
    t = tree(30)
    held = WitnessState(ORIGIN, 12, t.root(12))
    proof = t.consistency_proof(12, 30)
    proof[0] = bytes(32)
    data = AddCheckpoint(12, tuple(proof), note_of(t, 30, log_key)).encode()
    out = run(data, log_key, witness, held)
    assert isinstance(out, Refused) and out.status == 422
    assert "not consistent with size 12" in out.reason
    # a non-empty proof from size 0
    data = AddCheckpoint(0, (bytes(32),), note_of(t, 30, log_key)).encode()
    out = run(data, log_key, witness, None)
    assert isinstance(out, Refused) and out.status == 422


def test_fork_is_refused(log_key: Signer, witness: WitnessSigner) -> None:
    """The split-view defence: a validly signed checkpoint that is not an extension."""
    honest, forked = tree(30), tree(30, b"x")
    held = WitnessState(ORIGIN, 20, honest.root(20))
    same_size = AddCheckpoint(20, (), note_of(forked, 20, log_key)).encode()
    out = run(same_size, log_key, witness, held)
    assert isinstance(out, Refused) and out.status == 422
    assert out.reason == "size 20 was cosigned with another root"
    grown = AddCheckpoint(
        20, tuple(forked.consistency_proof(20, 30)), note_of(forked, 30, log_key)
    ).encode()
    out = run(grown, log_key, witness, held)
    assert isinstance(out, Refused) and out.status == 422


def test_smaller_size_refused(log_key: Signer, witness: WitnessSigner) -> None:
    t = tree(30)
    held = WitnessState(ORIGIN, 20, t.root(20))
    out = run(AddCheckpoint(20, (), note_of(t, 10, log_key)).encode(), log_key, witness, held)
    assert isinstance(out, Refused) and out.status == 400 and "larger" in out.reason
    out = run(request(t, 10, 10, log_key), log_key, witness, held)
    assert isinstance(out, Refused) and (out.status, out.size) == (409, 20)


def test_unknown_origin_404_and_bad_signature_403(log_key: Signer, witness: WitnessSigner) -> None:
    t = tree(5)
    stranger = Signer.from_seed("other.example/log", bytes(32))
    data = AddCheckpoint(
        0, (), sign_checkpoint(Checkpoint("other.example/log", 5, t.root()), stranger)
    ).encode()
    out = run(data, log_key, witness, None)
    assert isinstance(out, Refused) and out.status == 404
    impostor = Signer.from_seed(ORIGIN, bytes(32))  # right name, wrong key: unknown line
    out = run(request(t, 0, 5, impostor), log_key, witness, None)
    assert isinstance(out, Refused) and out.status == 403
    note = note_of(t, 5, log_key)
    tampered = note.replace("\n5\n", "\n6\n")  # the body edited after signing
    out = run(AddCheckpoint(0, (), tampered).encode(), log_key, witness, None)
    assert isinstance(out, Refused) and out.status == 403


def test_empty_tree_root(log_key: Signer, witness: WitnessSigner) -> None:
    ok = run(request(tree(0), 0, 0, log_key), log_key, witness, None)
    assert isinstance(ok, Cosigned) and ok.state.size == 0
    bad = sign_checkpoint(Checkpoint(ORIGIN, 0, bytes(32)), log_key)
    out = run(AddCheckpoint(0, (), bad).encode(), log_key, witness, None)
    assert isinstance(out, Refused) and out.status == 422


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"old 01\n\n", "leading zero"),
        (b"new 1\n\n", "'old <size>'"),
        (b"old 1\n", "no blank line"),
        (b"old 1\nnot-base64!\n\nx\n", "not valid base64"),
        (b"old 1\n" + base64.b64encode(bytes(31)) + b"\n\nx\n", "31 bytes"),
        (b"old 0\n\n" + b"\xff", "not UTF-8"),
    ],
)
def test_malformed_requests(body: bytes, why: str, log_key: Signer, witness: WitnessSigner) -> None:
    with pytest.raises(MalformedNote, match=why):
        AddCheckpoint.parse(body)
    out = run(body, log_key, witness, None)
    assert isinstance(out, Refused) and out.status == 400


def test_proof_line_limit(log_key: Signer, witness: WitnessSigner) -> None:
    note = note_of(tree(5), 5, log_key)
    at_limit = AddCheckpoint(1, (bytes(32),) * MAX_PROOF_LINES, note).encode()
    assert len(AddCheckpoint.parse(at_limit).proof) == MAX_PROOF_LINES
    over = AddCheckpoint(1, (bytes(32),) * (MAX_PROOF_LINES + 1), note).encode()
    out = run(over, log_key, witness, WitnessState(ORIGIN, 1, tree(5).root(1)))
    assert isinstance(out, Refused) and out.status == 400 and "64 proof lines" in out.reason


def test_request_round_trip_and_origin(log_key: Signer) -> None:
    t = tree(9)
    req = AddCheckpoint(3, tuple(t.consistency_proof(3, 9)), note_of(t, 9, log_key))
    assert AddCheckpoint.parse(req.encode()) == req
    assert req.encode().startswith(b"old 3\n")
    assert origin_of(req.encode()) == ORIGIN
    assert origin_of(b"garbage") is None


def test_response_parsing(log_key: Signer, witness: WitnessSigner) -> None:
    note = note_of(tree(3), 3, log_key)
    with pytest.raises(MalformedNote):
        parse_cosign_response(b"hello\n", note, witness.key)
    other = WitnessSigner.generate("witness.example/w2")
    only_other = cosign(other, split_note(note)[0], NOW).encode()
    with pytest.raises(SignatureError, match=re.escape("no cosignature by witness.example/w1")):
        parse_cosign_response(only_other, note, witness.key)
    for bad in (b"12", b"x\n", b"1\n2\n"):
        with pytest.raises(MalformedNote):
            parse_conflict_size(bad)


def test_verifier_vectors_parse_as_log_keys() -> None:
    # The shared vectors hold log (type 0x01) keys only; they must stay log keys.
    for v in json.loads(VECTORS.read_text())["keys"]:
        assert Verifier.from_vkey(v["vkey"]).to_vkey() == v["vkey"]


def test_an_independent_cosigner_vkey() -> None:
    """A native cosignature/v1 vkey from transparency-dev/formats' tests (note/
    note_cosigv1_test.go): its key ID, computed there, is the one we compute."""
    vkey = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"
    key = WitnessKey.from_vkey(vkey)
    assert key.key_id.hex() == "da77ade7" and key.to_vkey() == vkey
    wrong = vkey.replace("+da77ade7+", "+da77ade8+")
    with pytest.raises(MalformedNote, match="does not match"):
        WitnessKey.from_vkey(wrong)
