"""C2SP tlog-checkpoint bodies (origin, size, base64 root) on top of signed notes."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import MalformedNote
from .merkle import HASH_SIZE
from .note import Signer, Verifier, open_note, sign_note

__all__ = ["Checkpoint", "open_checkpoint", "sign_checkpoint"]


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise MalformedNote("checkpoint origin is empty or holds a newline")
        if self.size < 0:
            raise MalformedNote(f"checkpoint size {self.size} is negative")
        if len(self.root) != HASH_SIZE:
            raise MalformedNote(f"checkpoint root is {len(self.root)} bytes, not {HASH_SIZE}")

    def body(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode()]
        return "".join(line + "\n" for line in [*lines, *self.extensions])

    def digest(self) -> bytes:
        """SHA-256 of the checkpoint body: what an anchor commits to."""
        return hashlib.sha256(self.body().encode()).digest()

    @classmethod
    def parse(cls, body: str) -> Checkpoint:
        if not body.endswith("\n"):
            raise MalformedNote("checkpoint body does not end in a newline")
        lines = body[:-1].split("\n")
        if len(lines) < 3 or any(not line for line in lines):
            raise MalformedNote("checkpoint body needs origin, size and root on non-empty lines")
        origin, size_text, root_text, *ext = lines
        # isascii: str.isdigit() also accepts digits such as "²" that int() rejects;
        # the length bound keeps int() below its digit limit (sizes fit in 64 bits).
        if (
            not (size_text.isascii() and size_text.isdigit())
            or len(size_text) > 20
            or (size_text != "0" and size_text.startswith("0"))
        ):
            raise MalformedNote(f"checkpoint size {size_text!r} is not a plain decimal")
        try:
            root = base64.b64decode(root_text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MalformedNote("checkpoint root is not base64") from exc
        return cls(origin, int(size_text), root, tuple(ext))


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> str:
    return sign_note(checkpoint.body(), [signer])


def open_checkpoint(note: str, verifiers: Sequence[Verifier]) -> Checkpoint:
    """Verify a signed checkpoint note against trusted keys and parse its body."""
    return Checkpoint.parse(open_note(note, verifiers))
