"""Trust files: the keys a regulator trusts, kept apart from any bundle.

A trust file is UTF-8 text (a leading byte order mark is tolerated). Blank
lines are ignored, and so is everything from a token that starts with ``#`` to
the end of its line. Every other line is a directive followed by
whitespace-separated arguments::

    # riverseal station 0a1b2c, key received on site 2026-03-01
    key riverseal.example/gw/0a1b2c+1c2d3e4f+AVr... 2026-03-01T00:00:00Z

    key <vkey> [valid_from [valid_until]]
        a device key (C2SP verifier key string). The optional times are RFC 3339
        UTC (``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``); ``-`` leaves that end open. A record
        signed by this key must have ``valid_from <= time <= valid_until``.

    evm-sender <chain-id> <address>
        an Ethereum address (0x + 40 hex digits, compared case-insensitively)
        that may send riverseal anchors on the chain with this EIP-155 chain id.
        Several lines for one chain register several addresses.

    evm-confirmations <chain-id> <n>
        on a chain whose node reports no ``finalized`` block, an anchor needs
        ``n`` confirmations (1 = its own block). Without this line the number
        the receipt states is used. At most one line per chain.

    witness <vkey>
        a witness the regulator trusts to cosign checkpoints (C2SP vkey with
        signature type 0x04, cosignature/v1; docs/witness.md). Several lines
        list several witnesses.

    witness-policy <k>
        every checkpoint must carry valid cosignatures from at least ``k`` of
        the listed witnesses (step 5). Without this line, listed witnesses are
        all required (k = their number). At most one line; ``k`` must not
        exceed the number of ``witness`` lines.

Any other line is an error that names its line number. New directives are
one parser function each in ``_DIRECTIVES``, plus a field on ``TrustList``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from .errors import LedgerClientError, MalformedError
from .note import Verifier
from .records import parse_time
from .witness import WitnessKey

__all__ = ["EvmSender", "MalformedTrust", "TrustList", "TrustedKey", "parse_trust"]

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


class MalformedTrust(MalformedError):
    """A trust file cannot be read; ``line`` is the 1-based line at fault, if any."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


@dataclass(frozen=True)
class TrustedKey:
    """A device key and the window of record times it may sign (``None``: open)."""

    verifier: Verifier
    valid_from: datetime | None = None
    valid_until: datetime | None = None

    @property
    def key_id(self) -> str:
        """The C2SP key ID in lower-case hex, as records name it in ``key``."""
        return self.verifier.key_id.hex()

    def covers(self, when: datetime) -> bool:
        """Whether ``when`` lies inside the validity window (both ends included)."""
        if self.valid_from is not None and when < self.valid_from:
            return False
        return self.valid_until is None or when <= self.valid_until

    def window(self) -> str:
        """The window as text, e.g. ``from 2026-03-01T00:00:00+00:00 (open end)``."""
        start = "the beginning" if self.valid_from is None else self.valid_from.isoformat()
        end = "open end" if self.valid_until is None else self.valid_until.isoformat()
        return f"{start} to {end}"


@dataclass(frozen=True)
class EvmSender:
    """An address that may anchor on one EVM chain."""

    chain_id: int
    address: str
    """Lower-case ``0x`` + 40 hex digits."""


@dataclass(frozen=True)
class TrustList:
    """Everything a trust file says. An empty list trusts nothing."""

    keys: tuple[TrustedKey, ...] = ()
    evm_senders: tuple[EvmSender, ...] = ()
    evm_confirmations: tuple[tuple[int, int], ...] = ()
    """(chain id, confirmations) pairs from ``evm-confirmations`` lines."""
    witnesses: tuple[WitnessKey, ...] = ()
    """Witnesses whose cosignatures count towards ``witness_policy``."""
    witness_policy: int = 0
    """Valid cosignatures from distinct ``witnesses`` every checkpoint needs (0: none)."""

    def evm_senders_for(self, chain_id: int) -> frozenset[str]:
        """The registered anchoring addresses (lower case) for a chain."""
        return frozenset(s.address for s in self.evm_senders if s.chain_id == chain_id)

    def evm_confirmations_for(self, chain_id: int) -> int | None:
        """The confirmations this trust file requires on a chain, if it says."""
        return next((n for c, n in self.evm_confirmations if c == chain_id), None)


@dataclass
class _Builder:
    keys: list[TrustedKey] = field(default_factory=list)
    key_lines: dict[tuple[str, bytes], int] = field(default_factory=dict)
    senders: dict[EvmSender, int] = field(default_factory=dict)
    confirmations: dict[int, tuple[int, int]] = field(default_factory=dict)
    witnesses: dict[tuple[str, bytes], tuple[WitnessKey, int]] = field(default_factory=dict)
    policy: tuple[int, int] | None = None  # (k, line)

    def build(self) -> TrustList:
        witnesses = tuple(w for w, _ in self.witnesses.values())
        if self.policy is not None:
            k, line = self.policy
            if k > len(witnesses):
                raise MalformedTrust(
                    f"line {line}: witness-policy {k} asks for more witnesses than the "
                    f"{len(witnesses)} listed",
                    line,
                )
        return TrustList(
            keys=tuple(self.keys),
            evm_senders=tuple(self.senders),
            evm_confirmations=tuple((c, n) for c, (n, _) in self.confirmations.items()),
            witnesses=witnesses,
            witness_policy=len(witnesses) if self.policy is None else self.policy[0],
        )


def _time_arg(text: str, what: str) -> datetime | None:
    if text == "-":
        return None
    try:
        return parse_time(text)
    except LedgerClientError as exc:
        raise MalformedTrust(f"{what}: {exc}") from exc


def _key(args: list[str], out: _Builder, line: int) -> None:
    if not 1 <= len(args) <= 3:
        raise MalformedTrust("expected: key <vkey> [valid_from [valid_until]]")
    verifier = Verifier.from_vkey(args[0])
    valid_from = _time_arg(args[1], "valid_from") if len(args) > 1 else None
    valid_until = _time_arg(args[2], "valid_until") if len(args) > 2 else None
    if valid_from is not None and valid_until is not None and valid_until < valid_from:
        raise MalformedTrust("valid_until is before valid_from")
    ident = (verifier.name, verifier.public_key)
    if ident in out.key_lines:
        raise MalformedTrust(
            f"key {verifier.key_id.hex()} is already listed on line {out.key_lines[ident]}"
        )
    out.key_lines[ident] = line
    out.keys.append(TrustedKey(verifier, valid_from, valid_until))


def _positive_int(text: str, what: str) -> int:
    if not re.fullmatch(r"[0-9]{1,20}", text) or int(text) <= 0:
        raise MalformedTrust(f"{what} {text!r} is not a positive decimal integer")
    return int(text)


def _evm_sender(args: list[str], out: _Builder, line: int) -> None:
    if len(args) != 2:
        raise MalformedTrust("expected: evm-sender <chain-id> <address>")
    chain = _positive_int(args[0], "chain id")
    if not _ADDRESS.fullmatch(args[1]):
        raise MalformedTrust(f"address {args[1]!r} is not 0x followed by 40 hex digits")
    sender = EvmSender(chain, args[1].lower())
    if sender in out.senders:
        raise MalformedTrust(
            f"evm-sender {chain} {sender.address} is already listed on line {out.senders[sender]}"
        )
    out.senders[sender] = line


def _evm_confirmations(args: list[str], out: _Builder, line: int) -> None:
    if len(args) != 2:
        raise MalformedTrust("expected: evm-confirmations <chain-id> <n>")
    chain = _positive_int(args[0], "chain id")
    n = _positive_int(args[1], "confirmations")
    if chain in out.confirmations:
        raise MalformedTrust(
            f"evm-confirmations for chain {chain} is already set on line "
            f"{out.confirmations[chain][1]}"
        )
    out.confirmations[chain] = (n, line)


def _witness(args: list[str], out: _Builder, line: int) -> None:
    if len(args) != 1:
        raise MalformedTrust("expected: witness <vkey>")
    key = WitnessKey.from_vkey(args[0])
    ident = (key.name, key.public_key)
    if ident in out.witnesses:
        raise MalformedTrust(
            f"witness {key.name} is already listed on line {out.witnesses[ident][1]}"
        )
    out.witnesses[ident] = (key, line)


def _witness_policy(args: list[str], out: _Builder, line: int) -> None:
    if len(args) != 1:
        raise MalformedTrust("expected: witness-policy <k>")
    if out.policy is not None:
        raise MalformedTrust(f"witness-policy is already set on line {out.policy[1]}")
    out.policy = (_positive_int(args[0], "witness-policy"), line)


# directive -> parser(arguments, builder, line number)
_DIRECTIVES: dict[str, Callable[[list[str], _Builder, int], None]] = {
    "key": _key,
    "evm-sender": _evm_sender,
    "evm-confirmations": _evm_confirmations,
    "witness": _witness,
    "witness-policy": _witness_policy,
}


def parse_trust(data: str | bytes) -> TrustList:
    """Parse a trust file. Raises MalformedTrust naming the line at fault.

    A file that trusts no key at all is an error too: an empty policy would
    make every bundle fail for a reason that has nothing to do with it.
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedTrust(f"trust file is not UTF-8 text (byte {exc.start})") from exc
    data = data.removeprefix("\ufeff")
    out = _Builder()
    for number, line in enumerate(data.splitlines(), start=1):
        tokens = line.split()
        for i, token in enumerate(tokens):
            if token.startswith("#"):
                del tokens[i:]
                break
        if not tokens:
            continue
        directive, args = tokens[0], tokens[1:]
        parser = _DIRECTIVES.get(directive)
        if parser is None:
            known = ", ".join(sorted(_DIRECTIVES))
            raise MalformedTrust(
                f"line {number}: unknown directive {directive!r} (known: {known})", number
            )
        try:
            parser(args, out, number)
        except LedgerClientError as exc:
            raise MalformedTrust(f"line {number}: {exc}", number) from exc
    if not out.keys:
        raise MalformedTrust("trust file names no key (expected lines: key <vkey> ...)")
    return out.build()
