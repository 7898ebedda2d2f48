"""The one exception tree of ``ledger_client``.

Split by who is at fault::

    LedgerClientError                 base; ``diagnostics()`` is what a CLI prints
    ├── MalformedError                the input cannot be read as what it claims to be
    │   ├── MalformedProof            wrong hash length, wrong proof length, bad sizes
    │   ├── MalformedNote             not a signed note / checkpoint / key string
    │   └── MalformedBundle           not a riverseal bundle of a version we read
    └── VerificationError             well-formed, but it does not verify
        ├── ProofError                a Merkle proof does not lead to the claimed root
        ├── SignatureError            no trusted signature, or a trusted one fails
        ├── RecordError               a record breaks the record rules
        └── AnchorCheckError          a ledger does not confirm an anchor receipt
    LedgerUnreachable                 the ledger to check against could not be asked
"""

from __future__ import annotations

__all__ = [
    "AnchorCheckError",
    "LedgerClientError",
    "LedgerUnreachable",
    "MalformedBundle",
    "MalformedError",
    "MalformedNote",
    "MalformedProof",
    "ProofError",
    "RecordError",
    "SignatureError",
    "VerificationError",
]


class LedgerClientError(Exception):
    """Base of every error raised by ledger_client."""

    def diagnostics(self) -> str:
        return str(self)


class MalformedError(LedgerClientError):
    """The input is not well-formed; nothing about its truth was decided."""


class MalformedProof(MalformedError):
    """A Merkle proof or its parameters are malformed (lengths, sizes, indexes)."""


class MalformedNote(MalformedError):
    """A signed note, checkpoint or key string cannot be parsed."""


class MalformedBundle(MalformedError):
    """A bundle cannot be read: bad JSON, unknown format or version, missing fields."""


class VerificationError(LedgerClientError):
    """Well-formed data that fails verification."""


class ProofError(VerificationError):
    """A Merkle proof does not lead to the claimed root."""


class SignatureError(VerificationError):
    """A signature is missing, from an untrusted key, or does not verify."""


class RecordError(VerificationError):
    """A record is not canonical, misses a field, or breaks a record rule."""


class AnchorCheckError(VerificationError):
    """An anchor receipt is not confirmed by the ledger it names (wrong calldata,
    sender, chain, imprint, signer; missing transaction; not final)."""


class LedgerUnreachable(LedgerClientError):
    """The ledger (an RPC node, a TSA chain file) could not be consulted; nothing
    about the receipt was decided, so the verdict cannot be "verified"."""
