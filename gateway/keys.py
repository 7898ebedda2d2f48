"""The box's keys: the Ed25519 device key, and the secp256k1 anchoring key.

The device key signs every record and every checkpoint; it is stored as a
C2SP signer-key string. It is created once by ``gateway init`` and never
overwritten: a box that lost its key is a new device to the regulator, so no
code path here replaces an existing file.

The device key can be rotated (``gateway rotate-key``, gateway/rotate.py): a
new key with the same name (so the same origin and device id) is written to
``<key_file>.next``, the log records the hand-over, and the old file is kept as
``<key_file>.retired-<key ID>`` until it is destroyed. The log database keeps
the key history (``KeyWindow``): which key may sign which record times.

The anchoring key signs EVM anchor transactions (``gateway init
--anchor-key``). It is a separate key on purpose: an Ethereum account is
funded, rotated and registered with the regulator (``evm-sender``) on its own
schedule, and a leak of it cannot forge a reading. Stored as ``0x`` + 64 hex
digits, mode 0600, under the same never-overwrite rule.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

import nacl.signing

from ledger_client.errors import MalformedNote
from ledger_client.note import Signer

from .errors import KeyFileError, StoreError

__all__ = [
    "KEY_HISTORY_META",
    "AnchorKey",
    "DeviceKey",
    "KeyWindow",
    "create_anchor_key",
    "create_device_key",
    "create_next_device_key",
    "device_id_for",
    "dump_key_history",
    "load_anchor_key",
    "load_device_key",
    "next_key_path",
    "parse_key_history",
    "peek_vkey",
    "retired_key_path",
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


def next_key_path(key_file: Path) -> Path:
    """Where ``gateway rotate-key`` writes the new key before the log names it."""
    return key_file.with_name(key_file.name + ".next")


def retired_key_path(key_file: Path, key_id_hex: str) -> Path:
    """Where a rotated-out key is kept until someone destroys it."""
    return key_file.with_name(f"{key_file.name}.retired-{key_id_hex}")


def create_next_device_key(key_file: Path, current: DeviceKey) -> DeviceKey:
    """A new key named as ``current`` (same origin, same device id), written to
    ``<key_file>.next`` with mode 0600; refused if that file exists."""
    signer = Signer(current.origin, nacl.signing.SigningKey.generate())
    path = next_key_path(key_file)
    _write_new(path, signer.to_skey(), "a pending device key")
    _sync_dir(path.parent)
    return DeviceKey(current.device_id, signer)


def peek_vkey(path: Path) -> str | None:
    """The verifier key of the device key in ``path``, or None if there is no such file.

    Unlike ``load_device_key`` this does not check the file's mode: it only tells
    which key a file holds (KeyFileError if it holds none).
    """
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read device key {path}: {exc}") from exc
    try:
        return Signer.from_skey(text).verifier().to_vkey()
    except MalformedNote as exc:
        raise KeyFileError(f"{path} is not a valid device key: {exc}") from exc


def _sync_dir(path: Path) -> None:
    """Make renames and new files in directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


KEY_HISTORY_META = "keys"
"""The log database's meta key holding the key history (absent until the first rotation)."""


@dataclass(frozen=True)
class KeyWindow:
    """One key of a device's history and the record times it may sign, both ends
    included (times as records write them; None: open)."""

    vkey: str
    valid_from: str | None = None
    valid_until: str | None = None

    @property
    def key_id_hex(self) -> str:
        """The key ID in hex, as records name their key."""
        return self.vkey.split("+", 2)[1]

    def to_json(self) -> dict[str, str | None]:
        return {"vkey": self.vkey, "valid_from": self.valid_from, "valid_until": self.valid_until}

    def trust_line(self) -> str:
        """The trust-file line for this key: ``key <vkey> [valid_from [valid_until]]``."""
        args = [self.vkey, self.valid_from or "-", self.valid_until or "-"]
        while args[-1] == "-":
            args.pop()
        return "key " + " ".join(args)


def parse_key_history(text: str) -> tuple[KeyWindow, ...]:
    """The key history as stored: a JSON list of ``{"vkey", "valid_from", "valid_until"}``,
    oldest first. StoreError if it is anything else."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise StoreError(f"log database: the key history is not JSON: {exc}") from exc
    out: list[KeyWindow] = []
    if not isinstance(doc, list) or not doc:
        raise StoreError("log database: the key history is not a non-empty list")
    for i, item in enumerate(doc):
        ok = (
            isinstance(item, dict)
            and set(item) == {"vkey", "valid_from", "valid_until"}
            and isinstance(item["vkey"], str)
            and item["vkey"].count("+") >= 2
            and all(item[k] is None or isinstance(item[k], str) for k in item)
        )
        if not ok:
            raise StoreError(f"log database: key history element {i} is not a key window")
        out.append(KeyWindow(item["vkey"], item["valid_from"], item["valid_until"]))
    return tuple(out)


def dump_key_history(history: tuple[KeyWindow, ...] | list[KeyWindow]) -> str:
    """The key history as stored (``parse_key_history`` reads it back)."""
    return json.dumps([k.to_json() for k in history], separators=(",", ":"))


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
