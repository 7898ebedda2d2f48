"""RFC 9162 Merkle hashing and strict proof verification."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger_client import errors
from ledger_client.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    leaf_hash,
    node_hash,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from tests.ledger_client.lc_bundles import SHARED

VECTORS = (SHARED / "testvectors" / "rfc9162").resolve()


def _cases(kind: str) -> list[Any]:
    files = sorted((VECTORS / kind).glob("*/*.json"))
    if not files:  # collection still works without ../shared; the one case then fails
        return [pytest.param(None, id=f"missing-{kind}-vectors")]
    return [pytest.param(f, id=str(f.relative_to(VECTORS / kind))) for f in files]


def _case(path: Path | None) -> Any:
    if path is None:
        pytest.fail(f"no test vectors under {VECTORS} (../shared must sit beside the repo)")
    return json.loads(path.read_text())


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def _b64list(values: list[str] | None) -> list[bytes]:
    return [base64.b64decode(v) for v in values or []]


@pytest.mark.parametrize("path", _cases("inclusion"))
def test_inclusion_vector(path: Path | None) -> None:
    case = _case(path)
    index, size = case["leafIdx"], case["treeSize"]
    leaf, root, proof = _b64(case["leafHash"]), _b64(case["root"]), _b64list(case["proof"])
    if case["wantErr"]:
        with pytest.raises(errors.LedgerClientError):
            verify_inclusion(index, size, leaf, proof, root)
    else:
        verify_inclusion(index, size, leaf, proof, root)
        assert root_from_inclusion_proof(index, size, leaf, proof) == root


@pytest.mark.parametrize("path", _cases("consistency"))
def test_consistency_vector(path: Path | None) -> None:
    case = _case(path)
    args = (
        case["size1"],
        case["size2"],
        _b64(case["root1"]),
        _b64(case["root2"]),
        _b64list(case["proof"]),
    )
    if case["wantErr"]:
        with pytest.raises(errors.LedgerClientError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_vectors_are_all_there() -> None:
    assert VECTORS.is_dir(), f"no test vectors at {VECTORS} (../shared must sit beside the repo)"
    assert len(list(VECTORS.glob("inclusion/*/*.json"))) >= 40
    assert len(list(VECTORS.glob("consistency/*/*.json"))) >= 40


# transparency-dev/merkle testonly/constants.go LeafInputs() and the roots of sizes 0-8.
LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


@pytest.mark.parametrize("size", range(9))
def test_reference_roots(size: int) -> None:
    tree = MerkleTree(LEAVES)
    assert tree.root(size).hex() == ROOTS[size]
    assert MerkleTree(LEAVES[:size]).root().hex() == ROOTS[size]


def test_hash_domain_separation() -> None:
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert (
        node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    )


def test_every_proof_of_the_reference_tree_verifies() -> None:
    tree = MerkleTree(LEAVES)
    for size in range(1, 9):
        root = tree.root(size)
        for index in range(size):
            verify_inclusion(
                index, size, leaf_hash(LEAVES[index]), tree.inclusion_proof(index, size), root
            )
        for size1 in range(1, size + 1):
            proof = tree.consistency_proof(size1, size)
            verify_consistency(size1, size, tree.root(size1), root, proof)


# --- strictness: each raises an error of ledger_client's own hierarchy ------------------------

TREE = MerkleTree(bytes([i]) for i in range(13))
ROOT13 = TREE.root(13)
LEAF5 = leaf_hash(bytes([5]))
PROOF5 = TREE.inclusion_proof(5, 13)


@pytest.mark.parametrize(
    ("index", "size", "leaf", "proof", "root"),
    [
        pytest.param(5, 13, LEAF5[:31], PROOF5, ROOT13, id="short-leaf-hash"),
        pytest.param(5, 13, LEAF5 + b"\x00", PROOF5, ROOT13, id="long-leaf-hash"),
        pytest.param(5, 13, LEAF5, PROOF5, ROOT13[:31], id="short-root"),
        pytest.param(5, 13, LEAF5, PROOF5, b"", id="empty-root"),
        pytest.param(5, 13, LEAF5, [*PROOF5[:-1], PROOF5[-1][:31]], ROOT13, id="short-proof-hash"),
        pytest.param(13, 13, LEAF5, PROOF5, ROOT13, id="index-equals-size"),
        pytest.param(14, 13, LEAF5, PROOF5, ROOT13, id="index-above-size"),
        pytest.param(-1, 13, LEAF5, PROOF5, ROOT13, id="negative-index"),
        pytest.param(0, 0, LEAF5, [], EMPTY_ROOT, id="empty-tree"),
        pytest.param(5, 13, LEAF5, PROOF5[:-1], ROOT13, id="proof-too-short"),
        pytest.param(5, 13, LEAF5, [*PROOF5, PROOF5[0]], ROOT13, id="proof-too-long"),
        pytest.param(5, 13, LEAF5, [], ROOT13, id="proof-empty"),
    ],
)
def test_inclusion_strictness(
    index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes
) -> None:
    with pytest.raises(errors.MalformedProof):
        verify_inclusion(index, size, leaf, proof, root)


def test_inclusion_wrong_root_is_a_proof_error() -> None:
    with pytest.raises(errors.ProofError):
        verify_inclusion(5, 13, LEAF5, PROOF5, TREE.root(12))


def test_inclusion_error_is_catchable_at_the_root() -> None:
    with pytest.raises(errors.LedgerClientError):
        root_from_inclusion_proof(5, 13, LEAF5, PROOF5[:2])


CONS = TREE.consistency_proof(5, 13)


@pytest.mark.parametrize(
    ("size1", "size2", "root1", "root2", "proof", "error"),
    [
        pytest.param(0, 13, EMPTY_ROOT, ROOT13, [], errors.MalformedProof, id="size1-zero"),
        pytest.param(0, 0, EMPTY_ROOT, EMPTY_ROOT, [], errors.MalformedProof, id="both-zero"),
        pytest.param(13, 5, ROOT13, TREE.root(5), CONS, errors.MalformedProof, id="size1-above"),
        pytest.param(5, 13, TREE.root(5), ROOT13, CONS[:-1], errors.MalformedProof, id="short"),
        pytest.param(
            5, 13, TREE.root(5), ROOT13, [*CONS, CONS[0]], errors.MalformedProof, id="long"
        ),
        pytest.param(5, 13, TREE.root(5), ROOT13, [], errors.MalformedProof, id="empty-proof"),
        pytest.param(
            5, 13, TREE.root(5)[:16], ROOT13, CONS, errors.MalformedProof, id="short-root1"
        ),
        pytest.param(
            5, 13, TREE.root(5), ROOT13 + b"!", CONS, errors.MalformedProof, id="long-root2"
        ),
        pytest.param(5, 13, TREE.root(6), ROOT13, CONS, errors.ProofError, id="wrong-root1"),
        pytest.param(5, 13, TREE.root(5), TREE.root(12), CONS, errors.ProofError, id="wrong-root2"),
        pytest.param(7, 7, TREE.root(7), TREE.root(6), [], errors.ProofError, id="same-size-roots"),
        pytest.param(
            7, 7, TREE.root(7), TREE.root(7), [ROOT13], errors.MalformedProof, id="same-size-proof"
        ),
    ],
)
def test_consistency_strictness(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: list[bytes], error: type[Exception]
) -> None:
    with pytest.raises(error):
        verify_consistency(size1, size2, root1, root2, proof)


def test_consistency_same_size_empty_proof_holds() -> None:
    verify_consistency(7, 7, TREE.root(7), TREE.root(7), [])


# --- properties -------------------------------------------------------------------------------


def _flip(proof: list[bytes], which: int, bit: int) -> list[bytes]:
    i = which % len(proof)
    h = bytearray(proof[i])
    h[(bit // 8) % len(h)] ^= 1 << (bit % 8)
    return [*proof[:i], bytes(h), *proof[i + 1 :]]


@st.composite
def tree_and_index(draw: st.DrawFn) -> tuple[MerkleTree, int, int]:
    size = draw(st.integers(1, 300))
    index = draw(st.integers(0, size - 1))
    return MerkleTree(i.to_bytes(4, "big") for i in range(size)), index, size


@settings(max_examples=150, deadline=None)
@given(tree_and_index(), st.integers(0, 10_000), st.integers(0, 255))
def test_inclusion_proofs_verify_and_any_bit_flip_fails(
    case: tuple[MerkleTree, int, int], which: int, bit: int
) -> None:
    tree, index, size = case
    root = tree.root(size)
    proof = tree.inclusion_proof(index, size)
    leaf = tree.leaf(index)
    verify_inclusion(index, size, leaf, proof, root)
    if proof:
        with pytest.raises(errors.ProofError):
            verify_inclusion(index, size, leaf, _flip(proof, which, bit), root)
    flipped_leaf = _flip([leaf], 0, bit)[0]
    with pytest.raises(errors.ProofError):
        verify_inclusion(index, size, flipped_leaf, proof, root)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 300), st.integers(1, 300), st.integers(0, 10_000), st.integers(0, 255))
def test_consistency_proofs_verify_and_any_bit_flip_fails(
    a: int, b: int, which: int, bit: int
) -> None:
    size1, size2 = min(a, b), max(a, b)
    tree = MerkleTree(i.to_bytes(4, "big") for i in range(size2))
    root1, root2 = tree.root(size1), tree.root(size2)
    proof = tree.consistency_proof(size1, size2)
    verify_consistency(size1, size2, root1, root2, proof)
    if proof:
        with pytest.raises(errors.ProofError):
            verify_consistency(size1, size2, root1, root2, _flip(proof, which, bit))
    if size1 < size2:
        with pytest.raises(errors.ProofError):
            verify_consistency(size1, size2, _flip([root1], 0, bit)[0], root2, proof)
