"""Pin the public surface of ledger_client: ``__all__`` is exactly its public names."""

from __future__ import annotations

import ledger_client

EXPECTED = [
    "AnchorCheckError",
    "AnchorChecker",
    "AnchorEvidence",
    "AnchorReceipt",
    "AnchorResult",
    "Bundle",
    "BundleEntry",
    "Checkpoint",
    "ConsistencyProof",
    "DeviceKey",
    "Evidence",
    "Failure",
    "KeptCheckpoint",
    "LedgerClientError",
    "LedgerUnreachable",
    "Level",
    "MalformedBundle",
    "MalformedError",
    "MalformedNote",
    "MalformedProof",
    "MalformedTrust",
    "Manifest",
    "MerkleTree",
    "ProofError",
    "RecordError",
    "Report",
    "SensorCounts",
    "SignatureError",
    "Signer",
    "StepResult",
    "TileBuilder",
    "TrustList",
    "TrustedKey",
    "VerificationError",
    "Verifier",
    "leaf_hash",
    "node_hash",
    "open_checkpoint",
    "open_note",
    "parse_evidence",
    "parse_trust",
    "read_entries",
    "root_from_inclusion_proof",
    "sign_checkpoint",
    "sign_note",
    "verify_bundle",
    "verify_consistency",
    "verify_evidence",
    "verify_inclusion",
    "verify_source",
]


def test_ledger_client_all_is_pinned() -> None:
    assert ledger_client.__all__ == EXPECTED


def test_ledger_client_all_is_alphabetised() -> None:
    assert ledger_client.__all__ == sorted(ledger_client.__all__)


def test_ledger_client_public_names_are_exactly_all() -> None:
    public = {
        name
        for name, value in vars(ledger_client).items()
        if not name.startswith("_") and not _is_submodule(value)
    }
    assert public == set(ledger_client.__all__)
    for name in ledger_client.__all__:
        assert getattr(ledger_client, name).__module__.startswith("ledger_client.")


def _is_submodule(value: object) -> bool:
    return type(value).__name__ == "module"
