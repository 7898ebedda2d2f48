"""The device key: one Ed25519 key per box, stored as a C2SP signer-key string.

The key signs every record and every checkpoint. It is created once by
``gateway init`` and never overwritten: a box that lost its key is a new
device to the regulator, so no code path here replaces an existing file.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import nacl.signing

from ledger_client.errors import MalformedNote
from ledger_client.note import Signer

from .errors import KeyFileError

__all__ = ["DeviceKey", "create_device_key", "device_id_for", "load_device_key"]


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


def create_device_key(path: Path) -> DeviceKey:
    """Generate a key and write it with mode 0600; refuse if the file exists."""
    sk = nacl.signing.SigningKey.generate()
    device_id = device_id_for(bytes(sk.verify_key))
    signer = Signer(f"riverseal/{device_id}", sk)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise KeyFileError(f"{path} already exists; refusing to overwrite a device key") from exc
    except OSError as exc:
        raise KeyFileError(f"cannot create {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "w") as f:
        f.write(signer.to_skey() + "\n")
        f.flush()
        os.fsync(f.fileno())
    return DeviceKey(device_id, signer)


def load_device_key(path: Path) -> DeviceKey:
    try:
        st = path.stat()
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError as exc:
        raise KeyFileError(f"device key {path} does not exist; run `gateway init` first") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read device key {path}: {exc}") from exc
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"device key {path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"run `chmod 600 {path}`"
        )
    try:
        signer = Signer.from_skey(text)
    except MalformedNote as exc:
        raise KeyFileError(f"device key {path} is not a valid key: {exc}") from exc
    prefix = "riverseal/"
    if not signer.name.startswith(prefix):
        raise KeyFileError(f"device key {path} is named {signer.name!r}, not riverseal/<id>")
    return DeviceKey(signer.name[len(prefix) :], signer)
