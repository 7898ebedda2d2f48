"""C2SP signed notes with Ed25519 (https://c2sp.org/signed-note).

A note is UTF-8 text ending in a newline, a blank line, then signature lines
``— <key name> <base64(key ID || signature)>``. Key ID = SHA-256(name || 0x0A ||
0x01 || public key)[:4]. Signatures from unknown keys are ignored; a note opens
only when at least one trusted key signed it and every trusted signature holds.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import nacl.exceptions
import nacl.signing

from .errors import MalformedNote, SignatureError

__all__ = ["ALG_ED25519", "Signer", "Verifier", "key_id", "open_note", "sign_note"]

ALG_ED25519 = 0x01
_DASH = "\u2014"
_MAX_SIGNATURES = 100  # a bound on work per note, as Go's note package has
_KEY_ID_HEX = re.compile(r"[0-9a-f]{8}")  # docs/bundle-format.md §1, §3: lower-case hex


def key_id(name: str, public_key: bytes, alg: int = ALG_ED25519) -> bytes:
    """The 4-byte C2SP key ID of an Ed25519 key signing with type ``alg``."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public_key).digest()[:4]


def parse_vkey(s: str, *, alg: int, what: str, kind: str) -> tuple[str, str, bytes]:
    """``name+hex(keyid)+base64(alg||pub)`` as (name, hex key ID, public key); base64 may
    itself hold '+'. ``what`` names the key in messages, ``kind`` what ``alg`` stands for.
    The caller checks the key ID against the key it builds."""
    parts = s.strip().split("+", 2)
    if len(parts) != 3:
        raise MalformedNote(f"{what} {s!r} is not name+keyid+key")
    name, hex_id, b64 = parts
    _check_name(name)
    if not _KEY_ID_HEX.fullmatch(hex_id):
        raise MalformedNote(f"{what} {name!r}: key ID {hex_id!r} is not 8 lower-case hex digits")
    raw = _b64decode(b64, f"{what} {name!r}")
    if len(raw) != 33 or raw[0] != alg:
        raise MalformedNote(f"{what} {name!r} is not {kind}")
    return name, hex_id, raw[1:]


def parse_skey(s: str, *, alg: int, what: str, kind: str) -> tuple[str, str, bytes]:
    """``PRIVATE+KEY+name+hex(keyid)+base64(alg||seed)`` as (name, hex key ID, seed)."""
    prefix = "PRIVATE+KEY+"
    if not s.startswith(prefix):
        raise MalformedNote(f"{what} does not start with PRIVATE+KEY+")
    parts = s.strip()[len(prefix) :].split("+", 2)
    if len(parts) != 3:
        raise MalformedNote(f"{what} is not PRIVATE+KEY+name+keyid+key")
    name, hex_id, b64 = parts
    raw = _b64decode(b64, f"{what} {name!r}")
    if len(raw) != 33 or raw[0] != alg:
        raise MalformedNote(f"{what} {name!r} is not {kind}")
    return name, hex_id, raw[1:]


def _check_name(name: str) -> None:
    if not name or "+" in name or any(c.isspace() for c in name):
        raise MalformedNote(f"key name {name!r} is empty or holds '+' or whitespace")


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedNote(f"{what} is not valid base64") from exc


@dataclass(frozen=True)
class Verifier:
    """A trusted Ed25519 note key: name, key ID and public key."""

    name: str
    key_id: bytes
    public_key: bytes
    _verify_key: nacl.signing.VerifyKey = field(repr=False, compare=False)

    @classmethod
    def from_public_key(cls, name: str, public_key: bytes) -> Verifier:
        _check_name(name)
        if len(public_key) != 32:
            raise MalformedNote(f"Ed25519 public key is {len(public_key)} bytes, not 32")
        return cls(name, key_id(name, public_key), public_key, nacl.signing.VerifyKey(public_key))

    @classmethod
    def from_vkey(cls, s: str) -> Verifier:
        """Parse ``name+hex(keyid)+base64(0x01||pub)``; base64 may itself hold '+'."""
        name, hex_id, public_key = parse_vkey(
            s, alg=ALG_ED25519, what="verifier key", kind="an Ed25519 key"
        )
        v = cls.from_public_key(name, public_key)
        if v.key_id.hex() != hex_id:
            raise MalformedNote(f"verifier key {name!r}: key ID {hex_id} does not match its key")
        return v

    def to_vkey(self) -> str:
        raw = base64.b64encode(bytes([ALG_ED25519]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{raw}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            self._verify_key.verify(message, signature)
        except (nacl.exceptions.BadSignatureError, ValueError):
            return False
        return True


@dataclass(frozen=True)
class Signer:
    """An Ed25519 note signing key."""

    name: str
    signing_key: nacl.signing.SigningKey = field(repr=False)

    @classmethod
    def generate(cls, name: str) -> Signer:
        _check_name(name)
        return cls(name, nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> Signer:
        _check_name(name)
        if len(seed) != 32:
            raise MalformedNote(f"Ed25519 seed is {len(seed)} bytes, not 32")
        return cls(name, nacl.signing.SigningKey(seed))

    @classmethod
    def from_skey(cls, s: str) -> Signer:
        """Parse ``PRIVATE+KEY+name+hex(keyid)+base64(0x01||seed)``."""
        name, hex_id, seed = parse_skey(
            s, alg=ALG_ED25519, what="signer key", kind="an Ed25519 key"
        )
        signer = cls.from_seed(name, seed)
        if signer.key_id.hex() != hex_id.lower():
            raise MalformedNote(f"signer key {name!r}: key ID {hex_id} does not match its key")
        return signer

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public_key)

    def to_skey(self) -> str:
        raw = base64.b64encode(bytes([ALG_ED25519]) + bytes(self.signing_key)).decode()
        return f"PRIVATE+KEY+{self.name}+{self.key_id.hex()}+{raw}"

    def verifier(self) -> Verifier:
        return Verifier.from_public_key(self.name, self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self.signing_key.sign(message).signature


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise MalformedNote("note text does not end in a newline")
    if any((c < " " and c != "\n") or c == "\x7f" for c in text):
        raise MalformedNote("note text holds a control character")


def sign_note(text: str, signers: Signer | Iterable[Signer]) -> str:
    """Sign ``text`` (which must end in a newline) with each signer."""
    _check_text(text)
    message = text.encode()
    group = [signers] if isinstance(signers, Signer) else list(signers)
    if not group:
        raise ValueError("sign_note needs at least one signer")
    lines = []
    for s in group:
        sig = base64.b64encode(s.key_id + s.sign(message)).decode()
        lines.append(f"{_DASH} {s.name} {sig}\n")
    return text + "\n" + "".join(lines)


def split_note(note: str) -> tuple[str, list[tuple[str, bytes, bytes]]]:
    """Split a note into its text and (name, key ID, signature) triples, unchecked."""
    split = note.rfind("\n\n")
    if split < 0:
        raise MalformedNote("note has no blank line before its signatures")
    text, sig_block = note[: split + 1], note[split + 2 :]
    _check_text(text)
    if not sig_block.endswith("\n"):
        raise MalformedNote("signature block does not end in a newline")
    sigs = []
    for line in sig_block[:-1].split("\n"):
        head, _, rest = line.partition(" ")
        name, _, b64 = rest.partition(" ")
        if head != _DASH or not name or not b64 or " " in b64:
            raise MalformedNote(f"malformed signature line {line!r}")
        raw = _b64decode(b64, f"signature by {name!r}")
        if len(raw) < 5:
            raise MalformedNote(f"signature by {name!r} is too short")
        sigs.append((name, raw[:4], raw[4:]))
    if not sigs:
        raise MalformedNote("note has no signature lines")
    if len(sigs) > _MAX_SIGNATURES:
        raise MalformedNote(f"note has more than {_MAX_SIGNATURES} signatures")
    return text, sigs


def open_note(note: str, verifiers: Verifier | Sequence[Verifier]) -> str:
    """Return the text of ``note`` once a trusted key's signature on it verifies.

    Signatures by keys not in ``verifiers`` are ignored. Raises SignatureError
    when no trusted key signed, or when a trusted key's signature fails.
    """
    trusted = [verifiers] if isinstance(verifiers, Verifier) else list(verifiers)
    text, sigs = split_note(note)
    message = text.encode()
    verified = 0
    for name, kid, sig in sigs:
        for v in trusted:
            if v.name == name and v.key_id == kid:
                if len(sig) != 64 or not v.verify(message, sig):
                    raise SignatureError(f"signature by trusted key {name!r} does not verify")
                verified += 1
    if not verified:
        names = ", ".join(sorted({n for n, _, _ in sigs}))
        raise SignatureError(f"no signature by a trusted key (signed by: {names})")
    return text
