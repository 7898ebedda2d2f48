"""The box's keys: the Ed25519 device key, and the secp256k1 anchoring key.

The device key signs every record and every checkpoint; it is stored as a
C2SP signer-key string. It is created once by ``gateway init`` and never
overwritten: a box that lost its key is a new device to the regulator, so no
code path here replaces an existing file.

The anchoring key signs EVM anchor transactions (``gateway init
--anchor-key``). It is a separate key on purpose: an Ethereum account is
funded, rotated and registered with the regulator (``evm-sender``) on its own
schedule, and a leak of it cannot forge a reading. Stored as ``0x`` + 64 hex
digits, mode 0600, under the same never-overwrite rule.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

import nacl.signing

from ledger_client.errors import MalformedNote
from ledger_client.note import Signer

from .errors import KeyFileError

__all__ = [
    "AnchorKey",
    "DeviceKey",
    "create_anchor_key",
    "create_device_key",
    "device_id_for",
    "load_anchor_key",
    "load_device_key",
]


def device_id_for(public_key: bytes) -> str:
    """A short stable name for a device, derived from its first key."""
    return "rs-" + hashlib.sha256(public_key).hexdigest()[:12]


@dataclass(frozen=True)
class DeviceKey:
    device_id: str
    signer: Signer

    @property
    def origin(self) -> str:
        return self.signer.name

    @property
    def signing_key(self) -> nacl.signing.SigningKey:
        return self.signer.signing_key

    @property
    def key_id_hex(self) -> str:
        return self.signer.key_id.hex()

    @property
    def vkey(self) -> str:
        return self.signer.verifier().to_vkey()


def _write_new(path: Path, text: str, what: str) -> None:
    """Write a key file with mode 0600; refuse if it exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise KeyFileError(f"{path} already exists; refusing to overwrite {what}") from exc
    except OSError as exc:
        raise KeyFileError(f"cannot create {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
        f.flush()
        os.fsync(f.fileno())


def _read_private(path: Path, what: str, hint: str) -> str:
    """A key file's text, refused if it is missing or readable by others."""
    try:
        st = path.stat()
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError as exc:
        raise KeyFileError(f"{what} {path} does not exist; {hint}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read {what} {path}: {exc}") from exc
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{what} {path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"run `chmod 600 {path}`"
        )
    return text


def create_device_key(path: Path) -> DeviceKey:
    """Generate a key and write it with mode 0600; refuse if the file exists."""
    sk = nacl.signing.SigningKey.generate()
    device_id = device_id_for(bytes(sk.verify_key))
    signer = Signer(f"riverseal/{device_id}", sk)
    _write_new(path, signer.to_skey(), "a device key")
    return DeviceKey(device_id, signer)


def load_device_key(path: Path) -> DeviceKey:
    text = _read_private(path, "device key", "run `gateway init` first")
    try:
        signer = Signer.from_skey(text)
    except MalformedNote as exc:
        raise KeyFileError(f"device key {path} is not a valid key: {exc}") from exc
    prefix = "riverseal/"
    if not signer.name.startswith(prefix):
        raise KeyFileError(f"device key {path} is named {signer.name!r}, not riverseal/<id>")
    return DeviceKey(signer.name[len(prefix) :], signer)


@dataclass(frozen=True)
class AnchorKey:
    """The secp256k1 key that signs EVM anchor transactions."""

    address: str
    """The account's address, EIP-55 checksummed: register it as ``evm-sender``."""
    private_key: bytes = field(repr=False)


def _anchor_key(private_key: bytes) -> AnchorKey:
    from .anchoring.evm_tx import eth_account  # only boxes that anchor to a chain need it

    try:
        address = eth_account().from_key(private_key).address
    except (ValueError, TypeError) as exc:  # eth-keys: not a valid secp256k1 scalar
        raise KeyFileError(f"not a valid secp256k1 private key: {exc}") from exc
    return AnchorKey(str(address), private_key)


def create_anchor_key(path: Path) -> AnchorKey:
    """Generate an anchoring key and write it with mode 0600; refuse if the file exists."""
    key = _anchor_key(secrets.token_bytes(32))
    _write_new(path, "0x" + key.private_key.hex(), "an anchoring key")
    return key


def load_anchor_key(path: Path) -> AnchorKey:
    text = _read_private(path, "anchoring key", "create one with `gateway init --anchor-key`")
    digits = text.removeprefix("0x")
    if len(digits) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digits):
        raise KeyFileError(f"anchoring key {path} is not 0x followed by 64 hex digits")
    try:
        return _anchor_key(bytes.fromhex(digits))
    except KeyFileError as exc:
        raise KeyFileError(f"anchoring key {path}: {exc}") from None
