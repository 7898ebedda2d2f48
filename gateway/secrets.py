"""Secrets in the config (the MQTT password, an EVM node's RPC token), from where they are safe.

A secret key ``<name>`` (``password``, ``token``) may be given in one of four ways::

    password = "..."                         # plain text: only in a file no one else can read
    password_file = "/etc/riverseal/mqtt-password"    # mode 0600 or 0400; one trailing
                                                      # newline is stripped
    password_env = "RIVERSEAL_MQTT_PASSWORD"          # an environment variable
    password_credential = "mqtt-password"             # systemd: $CREDENTIALS_DIRECTORY/<name>
                                                      # (LoadCredential= in the unit)

A plain-text secret in a config file that group or others can read is refused,
and so is a secret file they can read. Messages name the key, the file or the
variable, never the value (only its type: "must be a string, got int (a secret: not
shown)").
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gateway.toml_table import Table, shown

__all__ = ["CREDENTIALS_ENV", "SecretReader", "read_secret_file"]

CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"
"""Where systemd puts a unit's ``LoadCredential=`` files (a private, read-only mount)."""

MAX_SECRET_BYTES = 4096
"""A secret file longer than this is not a password or token (a wrong path?)."""

_CREDENTIAL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,255}")


@dataclass(frozen=True)
class SecretReader:
    """Reads the secret keys of a table: from the table, a file, the environment or systemd."""

    env: Mapping[str, str] = field(default_factory=dict)
    config_mode: int | None = None
    """The config file's permission bits; None: not a file (plain text is then allowed)."""
    config_path: str = "the config file"
    checking: bool = False
    """``gateway check`` outside the service: no credentials directory is only a warning."""
    resolve: bool = True
    """False: secrets kept elsewhere are not fetched (None), for commands that need none
    (status, export, publish): they run by hand, without the service's environment."""

    @classmethod
    def from_environment(
        cls, config: Path | None = None, *, checking: bool = False, resolve: bool = True
    ) -> SecretReader:
        mode = None
        if config is not None:
            try:
                mode = stat.S_IMODE(config.stat().st_mode)
            except OSError:
                mode = None
        return cls(dict(os.environ), mode, str(config or "the config file"), checking, resolve)

    def read(self, t: Table, name: str) -> str | None:
        """The secret ``name`` of table ``t``, or None when none is given (or it is unusable:
        the problem is recorded in ``t``)."""
        keys = (name, f"{name}_file", f"{name}_env", f"{name}_credential")
        given = [k for k in keys if k in t.data]
        t.used.update(keys)
        if not given:
            return None
        if len(given) > 1:
            t.problem(given[1], f"give the secret one way only, not both {' and '.join(given)}")
            return None
        key = given[0]
        value = t.data[key]
        if not isinstance(value, str) or (key != name and not value):
            what = "a string" if key == name else "a non-empty string"
            t.problem(key, f"must be {what}, got {type(value).__name__} {shown(name, value)}")
            return None
        if key == name:
            mode = self.config_mode
            if mode is not None and mode & 0o077:
                t.problem(
                    key,
                    f"is a plain-text secret in {self.config_path}, which group or others can "
                    f"read (mode {mode:04o}): chmod 600 {self.config_path}, or move the secret "
                    f"to {name}_file, {name}_env or {name}_credential",
                )
            return value
        if not self.resolve:
            return None
        if key.endswith("_file"):
            path = Path(value) if t.base is None else t.base / value
            problem, secret = read_secret_file(path)
        elif key.endswith("_env"):
            secret = self.env.get(value) or None
            problem = None if secret else f"the environment variable {value} is not set (or empty)"
        else:
            problem, secret = self._credential(value)
            if problem and self.checking and self.env.get(CREDENTIALS_ENV) is None:
                t.problem(key, problem, warning=True)
                return None
        if problem:
            t.problem(key, problem)
        return secret

    def _credential(self, name: str) -> tuple[str | None, str | None]:
        if not _CREDENTIAL_NAME.fullmatch(name) or name in (".", ".."):
            return f"{name!r} is not a credential name (letters, digits, _ . -)", None
        folder = self.env.get(CREDENTIALS_ENV)
        if not folder:
            return (
                f"no systemd credentials here (${CREDENTIALS_ENV} is not set): the unit needs "
                f"LoadCredential={name}:/path/to/file, and this only works under systemd",
                None,
            )
        return read_secret_file(Path(folder) / name, private=False)


def read_secret_file(path: Path, *, private: bool = True) -> tuple[str | None, str | None]:
    """``(problem, secret)``: a secret file's text, one trailing newline stripped.

    ``private``: refuse a file group or others can read (systemd's credentials
    directory is private to the service already).
    """
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            return f"{path} is not a regular file", None
        mode = stat.S_IMODE(st.st_mode)
        if private and mode & 0o077:
            return (
                f"{path} can be read by group or others (mode {mode:04o}): chmod 600 {path}",
                None,
            )
        with path.open("rb") as f:
            data = f.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        return f"{path} cannot be read: {exc.strerror or exc}", None
    if len(data) > MAX_SECRET_BYTES:
        return f"{path} is longer than {MAX_SECRET_BYTES} bytes: not a secret file?", None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return f"{path} is not UTF-8 text", None
    text = text.removesuffix("\n").removesuffix("\r") if text.endswith("\n") else text
    if not text:
        return f"{path} is empty", None
    return None, text
