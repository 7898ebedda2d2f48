"""One history across time: is this source the same log as checkpoints seen before?

A regulator keeps a checkpoint from each bundle it accepted (``--since-checkpoint
FILE``) or keeps the bundle itself (``--previous BUNDLE``). A later source proves
it *extends* that history when the kept checkpoint's root is the root of the
source's own tree at the kept size: either the source carries a checkpoint of
that size with the same root (its consistency proofs, step 6, then link it to the
newest), or the source rebuilds its tree from tiles and the tree, at the kept
size, has that root while at its full size it has the root its newest checkpoint
signs.

Two validly signed checkpoints that cannot both be prefixes of one log are a
**fork**: the same size with different roots, or a smaller one that is not the
prefix of a tree a larger one is proven to sign. Both notes go in the report; they
are the proof (docs/bundle-format.md §9.2).

Pure: the checklist feeds it the checkpoints it read and the roots the tree gave.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .checkpoint import Checkpoint
from .errors import LedgerClientError
from .note import Verifier, open_note, split_note

__all__ = ["KeptCheckpoint", "Lineage", "SignedCheckpoint"]


@dataclass(frozen=True)
class KeptCheckpoint:
    """A signed checkpoint note the regulator kept, and where it came from
    (``--since-checkpoint FILE``, ``--previous BUNDLE``), for the report."""

    note: str
    source: str


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint whose note opened under the keys in force."""

    checkpoint: Checkpoint
    note: str
    source: str


Fail = Callable[[str, int | None], None]
"""(reason, checkpoint size) -> records a step 6 failure."""
ForkFound = Callable[[SignedCheckpoint, SignedCheckpoint, str], None]


class Lineage:
    """Kept checkpoints against one source's checkpoints and tree."""

    def __init__(
        self,
        kept: Iterable[KeptCheckpoint],
        *,
        origin: str,
        verifiers: list[Verifier],
        fail: Fail,
        fork: ForkFound,
    ) -> None:
        self._fail = fail
        self._fork = fork
        self.kept: list[SignedCheckpoint] = []
        self.linked: list[str] = []
        for k in kept:
            signed = _open(k, origin, verifiers, fail)
            if signed is not None:
                self.kept.append(signed)
        self.tree_roots: dict[int, bytes] = {}
        self._settled: set[int] = set()  # positions in self.kept already decided

    def wanted_sizes(self) -> list[int]:
        """Sizes whose tree root settles a kept checkpoint."""
        return sorted({k.checkpoint.size for k in self.kept})

    def against_checkpoints(self, own: dict[int, SignedCheckpoint]) -> None:
        """Kept checkpoints of a size the source also signs: same root or a fork."""
        for i, k in enumerate(self.kept):
            mine = own.get(k.checkpoint.size)
            if mine is None:
                continue
            self._settled.add(i)
            if mine.checkpoint.root == k.checkpoint.root:
                self.linked.append(_linked_text(k))
            else:
                self._fork(
                    k,
                    mine,
                    f"two checkpoints of size {k.checkpoint.size} with different roots",
                )

    def tree_root(self, size: int, root: bytes) -> None:
        self.tree_roots[size] = root

    def finish(
        self,
        own: dict[int, SignedCheckpoint],
        *,
        tree_span: tuple[int, int] | None,
    ) -> None:
        """Settle what is left, once the tree (if any) is rebuilt.

        ``tree_span``: (first leaf, size) of a tree rebuilt from tiles whose root
        at full size is the one its newest checkpoint signs; None when the
        source has no such tree (v1, or a tree that did not verify).
        """
        newest = own[max(own)] if own else None
        proven = (
            tree_span is not None
            and newest is not None
            and self.tree_roots.get(newest.checkpoint.size) == newest.checkpoint.root
        )
        if proven and newest is not None:
            # A checkpoint of the source itself that is not a prefix of the proven tree.
            for size, mine in sorted(own.items()):
                root = self.tree_roots.get(size)
                if size != newest.checkpoint.size and root not in (None, mine.checkpoint.root):
                    self._fork(
                        mine,
                        newest,
                        f"checkpoint {size} is not a prefix of the tree checkpoint "
                        f"{newest.checkpoint.size} signs",
                    )
        for i, k in enumerate(self.kept):
            if i in self._settled:
                continue
            size = k.checkpoint.size
            largest = max(own) if own else 0
            root = self.tree_roots.get(size)
            if root is not None and proven and newest is not None:
                if root == k.checkpoint.root:
                    self.linked.append(_linked_text(k))
                else:
                    self._fork(
                        k,
                        newest,
                        f"the kept checkpoint {size} is not a prefix of the tree checkpoint "
                        f"{newest.checkpoint.size} signs",
                    )
            elif size > largest:
                self._fail(
                    f"the checkpoint you kept ({k.source}) is at size {size}, beyond this "
                    f"source's newest ({largest}): it cannot show that it extends that "
                    "history (an older export, or a log rolled back)",
                    size,
                )
            elif tree_span is not None and size < tree_span[0]:
                self._fail(
                    f"the checkpoint you kept ({k.source}, size {size}) lies before the "
                    f"first leaf this source carries ({tree_span[0]}); export a range that "
                    "starts at or before it",
                    size,
                )
            else:
                why = (
                    "its own tree does not match its newest checkpoint"
                    if root is not None
                    else "it carries no checkpoint of that size and no tree to compute one"
                )
                self._fail(
                    f"this source cannot be linked to the checkpoint you kept "
                    f"({k.source}, size {size}): {why}",
                    size,
                )


def _open(
    k: KeptCheckpoint, origin: str, verifiers: list[Verifier], fail: Fail
) -> SignedCheckpoint | None:
    try:
        body, _ = split_note(k.note)
        cp = Checkpoint.parse(body)
    except LedgerClientError as exc:
        fail(f"the checkpoint you kept ({k.source}) cannot be read: {exc}", None)
        return None
    if cp.origin != origin:
        fail(
            f"the checkpoint you kept ({k.source}) is of log {cp.origin!r}, not {origin!r}",
            cp.size,
        )
        return None
    try:
        open_note(k.note, verifiers)
    except LedgerClientError as exc:
        fail(
            f"the checkpoint you kept ({k.source}) does not open under the keys in force: {exc}",
            cp.size,
        )
        return None
    return SignedCheckpoint(cp, k.note, k.source)


def _linked_text(k: SignedCheckpoint) -> str:
    return f"extends the checkpoint you kept ({k.source}, size {k.checkpoint.size})"
