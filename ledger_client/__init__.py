"""riverseal's verifier library: Merkle log maths, signed notes, records, bundles.

Pure and synchronous: it reads bytes and returns values or raises a
``LedgerClientError``. Nothing here imports the gateway, serial or MQTT code;
the only third-party dependency is PyNaCl.
"""

from .bundle import AnchorReceipt, Bundle, BundleEntry, ConsistencyProof, DeviceKey
from .checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from .errors import (
    LedgerClientError,
    MalformedBundle,
    MalformedError,
    MalformedNote,
    MalformedProof,
    ProofError,
    RecordError,
    SignatureError,
    VerificationError,
)
from .merkle import (
    MerkleTree,
    leaf_hash,
    node_hash,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from .note import Signer, Verifier, open_note, sign_note
from .trust import MalformedTrust, TrustedKey, TrustList, parse_trust
from .verify import AnchorResult, Failure, Report, SensorCounts, StepResult, verify_bundle

__all__ = [
    "AnchorReceipt",
    "AnchorResult",
    "Bundle",
    "BundleEntry",
    "Checkpoint",
    "ConsistencyProof",
    "DeviceKey",
    "Failure",
    "LedgerClientError",
    "MalformedBundle",
    "MalformedError",
    "MalformedNote",
    "MalformedProof",
    "MalformedTrust",
    "MerkleTree",
    "ProofError",
    "RecordError",
    "Report",
    "SensorCounts",
    "SignatureError",
    "Signer",
    "StepResult",
    "TrustList",
    "TrustedKey",
    "VerificationError",
    "Verifier",
    "leaf_hash",
    "node_hash",
    "open_checkpoint",
    "open_note",
    "parse_trust",
    "root_from_inclusion_proof",
    "sign_checkpoint",
    "sign_note",
    "verify_bundle",
    "verify_consistency",
    "verify_inclusion",
]
