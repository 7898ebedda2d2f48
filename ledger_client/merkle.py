"""RFC 9162 §2.1 Merkle tree hashing, proof planning and strict proof verification.

Pure functions over ints and bytes. Verification follows RFC 9162 §2.1.3.2 and
§2.1.4.2 and adds the strict checks that a literal port misses: every hash is
32 bytes, ``index < size``, the proof has exactly the expected length, and a
consistency proof from the empty tree is always an error.

Proof *generation* is split in two so that a store can answer it in O(log n):
``inclusion_plan``/``consistency_plan`` say which stored perfect subtrees
(``Node(level, index)``) make up each proof element, and ``fold`` combines
them. ``MerkleTree`` is the in-memory implementation used by tests and tools.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from .errors import MalformedProof, ProofError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "Frontier",
    "MerkleTree",
    "Node",
    "consistency_plan",
    "consistency_proof_length",
    "fold",
    "inclusion_plan",
    "inclusion_proof_length",
    "leaf_hash",
    "node_hash",
    "root_from_inclusion_proof",
    "subtree_nodes",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 || d)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


class Node(NamedTuple):
    """A perfect subtree: leaves ``[index * 2**level, (index + 1) * 2**level)``."""

    level: int
    index: int  # type: ignore[assignment]  # shadows tuple.index, deliberately


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def subtree_nodes(start: int, end: int) -> list[Node]:
    """Perfect subtrees, largest first, whose fold is MTH(D[start:end]).

    ``[start, end)`` must be a subtree that RFC 9162's recursion visits, i.e.
    ``start`` is a multiple of the largest power of two below ``end - start``.
    """
    nodes: list[Node] = []
    while True:
        n = end - start
        if n <= 0:
            raise ValueError(f"empty range [{start}, {end})")
        if n & (n - 1) == 0:
            level = n.bit_length() - 1
            nodes.append(Node(level, start >> level))
            return nodes
        k = _split(n)
        level = k.bit_length() - 1
        if start % k:
            raise ValueError(f"range [{start}, {end}) is not an RFC 9162 subtree")
        nodes.append(Node(level, start >> level))
        start += k


def fold(hashes: Sequence[bytes]) -> bytes:
    """Combine the hashes of ``subtree_nodes`` (largest first) into one subtree hash."""
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def inclusion_plan(index: int, size: int) -> list[list[Node]]:
    """Which stored subtrees make up each element of PATH(index, D[0:size]).

    Elements are in proof order (nearest the leaf first), as RFC 9162 §2.1.3.1.
    """
    if not 0 <= index < size:
        raise MalformedProof(f"index {index} is not below tree size {size}")
    plan: list[list[Node]] = []
    start, n, m = 0, size, index
    while n > 1:
        k = _split(n)
        if m < k:
            plan.append(subtree_nodes(start + k, start + n))
            n = k
        else:
            plan.append(subtree_nodes(start, start + k))
            start, n, m = start + k, n - k, m - k
    plan.reverse()
    return plan


def consistency_plan(size1: int, size2: int) -> list[list[Node]]:
    """Which stored subtrees make up each element of PROOF(size1, D[0:size2]) (§2.1.4.1)."""
    if not 0 < size1 <= size2:
        raise MalformedProof(f"no consistency proof from size {size1} to size {size2}")
    plan: list[list[Node]] = []
    start, n, m, complete = 0, size2, size1, True
    while m != n:
        k = _split(n)
        if m <= k:
            plan.append(subtree_nodes(start + k, start + n))
            n = k
        else:
            plan.append(subtree_nodes(start, start + k))
            start, n, m, complete = start + k, n - k, m - k, False
    if not complete:
        plan.append(subtree_nodes(start, start + n))
    plan.reverse()
    return plan


def inclusion_proof_length(index: int, size: int) -> int:
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def consistency_proof_length(size1: int, size2: int) -> int:
    if size1 == size2:
        return 0
    inner = ((size1 - 1) ^ (size2 - 1)).bit_length()
    border = ((size1 - 1) >> inner).bit_count()
    shift = (size1 & -size1).bit_length() - 1
    seeded = 0 if size1 == 1 << shift else 1
    return seeded + inner - shift + border


def _check_hash(what: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise MalformedProof(f"{what} is {len(value)} bytes, not {HASH_SIZE}")


def _check_proof(proof: Sequence[bytes], expected: int) -> None:
    if len(proof) != expected:
        raise MalformedProof(f"proof has {len(proof)} hashes, expected exactly {expected}")
    for i, h in enumerate(proof):
        if len(h) != HASH_SIZE:
            _check_hash(f"proof hash {i}", h)


def root_from_inclusion_proof(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes]
) -> bytes:
    """The root that ``proof`` implies for the leaf at ``index`` in a tree of ``size``.

    Raises MalformedProof on a wrong hash length, ``index >= size`` or a proof
    that is too short or too long.
    """
    if size <= 0 or not 0 <= index < size:
        raise MalformedProof(f"index {index} is not below tree size {size}")
    _check_hash("leaf hash", leaf_hash)
    _check_proof(proof, inclusion_proof_length(index, size))
    # RFC 9162 §2.1.3.2, step by step.
    fn, sn, r = index, size - 1, leaf_hash
    sha256 = hashlib.sha256  # node_hash, inlined: this loop is the verifier's hot path
    for p in proof:
        if sn == 0:  # unreachable after the length check; kept as the RFC states it
            raise MalformedProof("inclusion proof is longer than the path")
        if fn & 1 or fn == sn:
            r = sha256(b"\x01" + p + r).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MalformedProof("inclusion proof is shorter than the path")
    return r


def verify_inclusion(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise unless ``proof`` proves ``leaf_hash`` at ``index`` under ``root``."""
    _check_hash("root", root)
    if root_from_inclusion_proof(index, size, leaf_hash, proof) != root:
        raise ProofError(f"inclusion proof for index {index} does not lead to the root")


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """Raise unless ``proof`` shows the tree of ``size1`` is a prefix of the tree of ``size2``.

    A proof from the empty tree is meaningless and always rejected.
    """
    if size1 <= 0:
        raise MalformedProof(f"consistency proof from size {size1} is meaningless")
    if size1 > size2:
        raise MalformedProof(f"size1 {size1} is larger than size2 {size2}")
    _check_hash("root1", root1)
    _check_hash("root2", root2)
    _check_proof(proof, consistency_proof_length(size1, size2))
    if size1 == size2:
        if root1 != root2:
            raise ProofError("equal sizes but different roots")
        return
    # RFC 9162 §2.1.4.2.
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise MalformedProof("consistency proof is longer than the path")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MalformedProof("consistency proof is shorter than the path")
    if fr != root1:
        raise ProofError(f"consistency proof does not lead to the root of size {size1}")
    if sr != root2:
        raise ProofError(f"consistency proof does not lead to the root of size {size2}")


class Frontier:
    """The right edge of an append-only tree: enough to append and to give the root.

    ``append`` returns every perfect subtree it completes, so a store can keep
    them and answer any later proof from O(log n) lookups.
    """

    __slots__ = ("_edge", "size")

    def __init__(self, size: int = 0, edge: Iterable[bytes] = ()) -> None:
        # edge[i] is the hash of the i-th perfect subtree of the size's binary
        # decomposition, largest first (the Node list of subtree_nodes(0, size)).
        self.size = size
        self._edge = list(edge)
        if size and len(self._edge) != size.bit_count():
            raise ValueError(f"a frontier of size {size} has {size.bit_count()} subtrees")

    @staticmethod
    def nodes_for(size: int) -> list[Node]:
        """The stored subtrees a Frontier of ``size`` is built from."""
        return subtree_nodes(0, size) if size else []

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf hash; return (level, index, hash) for each completed subtree."""
        created = [(0, self.size, leaf)]
        h, level, idx = leaf, 0, self.size
        while idx & 1:
            h = node_hash(self._edge.pop(), h)
            level += 1
            idx >>= 1
            created.append((level, idx, h))
        self._edge.append(h)
        self.size += 1
        return created

    def root(self) -> bytes:
        return fold(self._edge) if self._edge else EMPTY_ROOT

    def copy(self) -> Frontier:
        return Frontier(self.size, self._edge)


class MerkleTree:
    """An in-memory append-only tree that keeps every perfect subtree."""

    def __init__(self, entries: Iterable[bytes] = ()) -> None:
        self._nodes: dict[Node, bytes] = {}
        self._frontier = Frontier()
        for e in entries:
            self.append(e)

    @property
    def size(self) -> int:
        return self._frontier.size

    def append(self, entry: bytes) -> int:
        for level, idx, h in self._frontier.append(leaf_hash(entry)):
            self._nodes[Node(level, idx)] = h
        return self._frontier.size - 1

    def _lookup(self, size: int) -> Callable[[list[Node]], bytes]:
        if size > self.size:
            raise MalformedProof(f"tree has {self.size} entries, not {size}")
        return lambda nodes: fold([self._nodes[n] for n in nodes])

    def root(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        return self._lookup(size)(subtree_nodes(0, size)) if size else EMPTY_ROOT

    def leaf(self, index: int) -> bytes:
        return self._nodes[Node(0, index)]

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        get = self._lookup(size)
        return [get(nodes) for nodes in inclusion_plan(index, size)]

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        get = self._lookup(size2)
        return [get(nodes) for nodes in consistency_plan(size1, size2)]
