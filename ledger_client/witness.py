"""Witness cosignatures: C2SP tlog-cosignature (``cosignature/v1``) and tlog-witness.

Pure: bytes and an explicit clock in, values out; the HTTP server is
``riverseal_monitor.witness`` and the box's client ``gateway.witnessing``.
docs/witness.md describes the protocol as riverseal uses it.

- A cosignature is a note signature line by a witness key. Its key ID is
  SHA-256(name || 0x0A || 0x04 || Ed25519 public key)[:4] (type 0x04, not the
  0x01 of log keys), and its payload is key ID || 8-byte big-endian POSIX time ||
  Ed25519 signature over ``cosignature/v1\\ntime <t>\\n`` + the checkpoint body.
- ``add-checkpoint`` request bodies are ``old <size>\\n``, at most 63 base64
  consistency-proof lines, a blank line, then the signed checkpoint note.
- ``decide`` is the witness: given the (size, root) it last cosigned for the
  origin, the logs it trusts and a request, it cosigns or refuses with the HTTP
  status the spec assigns (400 malformed or old > new, 404 unknown origin, 403
  no valid log signature, 409 old size not ours, 422 inconsistent).
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import nacl.exceptions
import nacl.signing

from .checkpoint import Checkpoint
from .errors import LedgerClientError, MalformedNote, MalformedProof, ProofError, SignatureError
from .merkle import EMPTY_ROOT, HASH_SIZE, verify_consistency
from .note import (
    Verifier,
    _b64decode,
    _check_name,
    key_id,
    open_note,
    parse_skey,
    parse_vkey,
    split_note,
)

__all__ = [
    "ALG_COSIGNATURE_V1",
    "MAX_PROOF_LINES",
    "SIZE_CONTENT_TYPE",
    "AddCheckpoint",
    "Cosignature",
    "Cosigned",
    "Refused",
    "WitnessKey",
    "WitnessSigner",
    "WitnessState",
    "cosign",
    "cosignature_message",
    "cosignatures",
    "cosigner_key_id",
    "decide",
    "origin_of",
    "parse_conflict_size",
    "parse_cosign_response",
]

ALG_COSIGNATURE_V1 = 0x04
MAX_PROOF_LINES = 63
"""tlog-witness: a client MUST NOT send more proof lines; a witness refuses more as malformed."""
SIZE_CONTENT_TYPE = "text/x.tlog.size"
"""The Content-Type of a 409 reply, whose body is the witness's size and a newline."""
_DASH = "\u2014"
_WHAT = "witness key"
_KIND = "an Ed25519 cosignature/v1 key (type 0x04)"
_MAX_TIME = 2**63 - 1


def cosigner_key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte key ID of an Ed25519 cosigner (signature type 0x04)."""
    return key_id(name, public_key, ALG_COSIGNATURE_V1)


def cosignature_message(body: str, timestamp: int) -> bytes:
    """What a ``cosignature/v1`` signs: header, time line, then the checkpoint body."""
    if not 0 <= timestamp <= _MAX_TIME:
        raise MalformedNote(f"cosignature time {timestamp} is outside 0..2**63-1")
    return f"cosignature/v1\ntime {timestamp}\n{body}".encode()


@dataclass(frozen=True)
class WitnessKey:
    """A witness's public key (C2SP vkey with type 0x04): name, key ID, key."""

    name: str
    key_id: bytes
    public_key: bytes
    _verify_key: nacl.signing.VerifyKey = field(repr=False, compare=False)

    @classmethod
    def from_public_key(cls, name: str, public_key: bytes) -> WitnessKey:
        _check_name(name)
        if len(public_key) != 32:
            raise MalformedNote(f"Ed25519 public key is {len(public_key)} bytes, not 32")
        return cls(
            name,
            cosigner_key_id(name, public_key),
            public_key,
            nacl.signing.VerifyKey(public_key),
        )

    @classmethod
    def from_vkey(cls, s: str) -> WitnessKey:
        """Parse ``name+hex(keyid)+base64(0x04||pub)``; base64 may itself hold '+'."""
        name, hex_id, public_key = parse_vkey(s, alg=ALG_COSIGNATURE_V1, what=_WHAT, kind=_KIND)
        key = cls.from_public_key(name, public_key)
        if key.key_id.hex() != hex_id:
            raise MalformedNote(f"witness key {name!r}: key ID {hex_id} does not match its key")
        return key

    def to_vkey(self) -> str:
        raw = base64.b64encode(bytes([ALG_COSIGNATURE_V1]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{raw}"

    def verify(self, body: str, timestamp: int, signature: bytes) -> bool:
        """Whether ``signature`` is this witness's cosignature on ``body`` at ``timestamp``."""
        try:
            self._verify_key.verify(cosignature_message(body, timestamp), signature)
        except (nacl.exceptions.BadSignatureError, ValueError, MalformedNote):
            return False
        return True


@dataclass(frozen=True)
class WitnessSigner:
    """A witness's private key (``PRIVATE+KEY+name+keyid+base64(0x04||seed)``)."""

    name: str
    signing_key: nacl.signing.SigningKey = field(repr=False)

    @classmethod
    def generate(cls, name: str) -> WitnessSigner:
        _check_name(name)
        return cls(name, nacl.signing.SigningKey.generate())

    @classmethod
    def from_skey(cls, s: str) -> WitnessSigner:
        name, hex_id, seed = parse_skey(s.strip(), alg=ALG_COSIGNATURE_V1, what=_WHAT, kind=_KIND)
        _check_name(name)
        signer = cls(name, nacl.signing.SigningKey(seed))
        if signer.key.key_id.hex() != hex_id.lower():
            raise MalformedNote(f"witness key {name!r}: key ID {hex_id} does not match its key")
        return signer

    @property
    def key(self) -> WitnessKey:
        return WitnessKey.from_public_key(self.name, bytes(self.signing_key.verify_key))

    def to_skey(self) -> str:
        raw = base64.b64encode(bytes([ALG_COSIGNATURE_V1]) + bytes(self.signing_key)).decode()
        return f"PRIVATE+KEY+{self.name}+{self.key.key_id.hex()}+{raw}"


def cosign(signer: WitnessSigner, body: str, timestamp: int) -> str:
    """The cosignature line (ending in a newline) of ``signer`` on a checkpoint body."""
    if timestamp <= 0:
        raise ValueError("a checkpoint cosignature carries a non-zero time")
    sig = signer.signing_key.sign(cosignature_message(body, timestamp)).signature
    payload = signer.key.key_id + struct.pack(">Q", timestamp) + sig
    return f"{_DASH} {signer.name} {base64.b64encode(payload).decode()}\n"


@dataclass(frozen=True)
class Cosignature:
    """A verified cosignature: who, when (POSIX seconds), and its note line."""

    witness: WitnessKey
    timestamp: int
    line: str


def cosignatures(note: str, witnesses: Sequence[WitnessKey]) -> tuple[list[Cosignature], list[str]]:
    """The valid cosignatures on ``note`` by ``witnesses``, and the problems found.

    Lines by other keys are ignored (signed-note: unknown keys are skipped). A
    line whose name and key ID match a witness but whose signature does not
    verify is a problem, not a cosignature. One cosignature per witness counts.
    """
    text, sigs = split_note(note)
    found: dict[bytes, Cosignature] = {}
    problems: list[str] = []
    for name, kid, payload in sigs:
        for w in witnesses:
            if w.name != name or w.key_id != kid or w.key_id in found:
                continue
            if len(payload) != 8 + 64:
                problems.append(f"cosignature by {name} is {len(payload) + 4} bytes, not 76")
                continue
            (timestamp,) = struct.unpack(">Q", payload[:8])
            if w.verify(text, timestamp, payload[8:]):
                raw = base64.b64encode(kid + payload).decode()
                found[w.key_id] = Cosignature(w, timestamp, f"{_DASH} {name} {raw}\n")
            else:
                problems.append(f"cosignature by {name} does not verify")
    return list(found.values()), problems


# --- add-checkpoint --------------------------------------------------------------------


def _decimal(text: str, what: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 20:
        raise MalformedNote(f"{what} {text!r} is not a decimal number")
    if text != "0" and text.startswith("0"):
        raise MalformedNote(f"{what} {text!r} has a leading zero")
    return int(text)


@dataclass(frozen=True)
class AddCheckpoint:
    """An ``add-checkpoint`` request: old size, consistency proof, signed checkpoint note."""

    old_size: int
    proof: tuple[bytes, ...]
    note: str

    def encode(self) -> bytes:
        lines = [f"old {self.old_size}\n"]
        lines += [base64.b64encode(h).decode() + "\n" for h in self.proof]
        return ("".join(lines) + "\n" + self.note).encode()

    @classmethod
    def parse(cls, data: bytes) -> AddCheckpoint:
        """Raise MalformedNote for anything that is not a well-formed request."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedNote("request body is not UTF-8") from exc
        head, sep, note = text.partition("\n\n")
        if not sep:
            raise MalformedNote("request has no blank line before the checkpoint")
        lines = head.split("\n")
        first = lines[0]
        if not first.startswith("old "):
            raise MalformedNote("request does not start with an 'old <size>' line")
        old = _decimal(first[4:], "old size")
        if len(lines) - 1 > MAX_PROOF_LINES:
            raise MalformedNote(
                f"request has {len(lines) - 1} proof lines, more than {MAX_PROOF_LINES}"
            )
        proof = []
        for i, line in enumerate(lines[1:]):
            h = _b64decode(line, f"proof line {i + 1}")
            if len(h) != HASH_SIZE:
                raise MalformedNote(f"proof line {i + 1} is {len(h)} bytes, not {HASH_SIZE}")
            proof.append(h)
        split_note(note)  # a checkpoint note, signatures and all, or MalformedNote
        return cls(old, tuple(proof), note)


@dataclass(frozen=True)
class WitnessState:
    """What a witness holds for one origin: the checkpoint it last cosigned."""

    origin: str
    size: int
    root: bytes


@dataclass(frozen=True)
class Cosigned:
    """The request was accepted: the new state to store and the reply body."""

    state: WitnessState
    checkpoint: Checkpoint
    lines: str
    """The cosignature line(s), the 200 reply's body."""


@dataclass(frozen=True)
class Refused:
    """The request was refused with an HTTP ``status`` and a one-line ``reason``."""

    status: int
    reason: str
    size: int | None = None
    """For 409: the size the witness holds, the reply's body."""

    def body(self) -> bytes:
        if self.status == 409:
            return f"{self.size}\n".encode()
        return (self.reason + "\n").encode()


def origin_of(data: bytes) -> str | None:
    """The origin named by a request body, unchecked (to look up the stored state)."""
    try:
        request = AddCheckpoint.parse(data)
        return Checkpoint.parse(split_note(request.note)[0]).origin
    except LedgerClientError:
        return None


def decide(
    data: bytes,
    *,
    logs: Mapping[str, Sequence[Verifier]],
    stored: WitnessState | None,
    signer: WitnessSigner,
    now: int,
) -> Cosigned | Refused:
    """The witness's answer to an ``add-checkpoint`` body, in the spec's order of checks.

    ``logs``: trusted log keys per origin; ``stored``: what the witness last
    cosigned for this request's origin (None: never); ``now``: POSIX seconds,
    the cosignature's time. The caller stores ``Cosigned.state`` only if its
    stored state is still ``stored`` (compare-and-swap) before replying.
    """
    try:
        request = AddCheckpoint.parse(data)
        cp = Checkpoint.parse(split_note(request.note)[0])
    except LedgerClientError as exc:
        return Refused(400, f"malformed request: {exc}")
    verifiers = logs.get(cp.origin)
    if verifiers is None:
        return Refused(404, f"unknown log origin {cp.origin!r}")
    try:
        open_note(request.note, verifiers)
    except LedgerClientError as exc:
        return Refused(403, f"checkpoint signature: {exc}")
    if stored is not None and stored.origin != cp.origin:
        raise ValueError("stored state is for another origin")
    if request.old_size > cp.size:
        return Refused(
            400, f"old size {request.old_size} is larger than the checkpoint's {cp.size}"
        )
    held = 0 if stored is None else stored.size
    if request.old_size != held:
        return Refused(409, f"old size {request.old_size} is not {held}", size=held)
    if cp.size == 0 and cp.root != EMPTY_ROOT:
        return Refused(422, "a checkpoint of size 0 must have the empty tree's root")
    if request.old_size == 0:
        if request.proof:
            return Refused(422, "a proof from size 0 must be empty")
    else:
        assert stored is not None  # held == old_size > 0
        try:
            verify_consistency(stored.size, cp.size, stored.root, cp.root, request.proof)
        except (MalformedProof, ProofError) as exc:
            if stored.size == cp.size:
                reason = f"size {cp.size} was cosigned with another root"
            else:
                reason = f"not consistent with size {stored.size}: {exc}"
            return Refused(422, reason)
    line = cosign(signer, cp.body(), now)
    return Cosigned(WitnessState(cp.origin, cp.size, cp.root), cp, line)


def parse_conflict_size(body: bytes) -> int:
    """The witness's size in a 409 reply (``<size>\\n``); MalformedNote otherwise."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError as exc:
        raise MalformedNote("409 reply is not ASCII") from exc
    if not text.endswith("\n") or "\n" in text[:-1]:
        raise MalformedNote("409 reply is not one line")
    return _decimal(text[:-1], "witness size")


def parse_cosign_response(body: bytes, note: str, witness: WitnessKey) -> Cosignature:
    """The witness's valid cosignature on ``note`` from a 200 reply; lines by other
    keys are ignored. Raises MalformedNote or SignatureError when there is none."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedNote("cosignature reply is not UTF-8") from exc
    if (
        not text
        or not text.endswith("\n")
        or not all(line.startswith(_DASH + " ") for line in text[:-1].split("\n"))
    ):
        raise MalformedNote("cosignature reply is not signature lines")
    found, problems = cosignatures(note + text, [witness])
    if not found:
        raise SignatureError(
            "; ".join(problems) or f"the reply holds no cosignature by {witness.name}"
        )
    return found[0]
