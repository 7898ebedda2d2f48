"""riverseal's verifier library: Merkle log maths, signed notes, records, bundles.

Pure and synchronous: it reads bytes and returns values or raises a
``LedgerClientError``. Nothing here imports the gateway, serial or MQTT code;
the only third-party dependency is PyNaCl.
"""

from .bundle import AnchorReceipt, Bundle, BundleEntry, ConsistencyProof, DeviceKey
from .bundle_v2 import Manifest, read_entries
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
from .evidence import Evidence, parse_evidence, verify_evidence
from .merkle import (
    MerkleTree,
    leaf_hash,
    node_hash,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from .note import Signer, Verifier, open_note, sign_note
from .tiles import TileBuilder
from .trust import MalformedTrust, TrustedKey, TrustList, parse_trust
from .verify import AnchorResult, Failure, Report, SensorCounts, StepResult, verify_bundle
from .verify_stream import verify_source

__all__ = [
    "AnchorReceipt",
    "AnchorResult",
    "Bundle",
    "BundleEntry",
    "Checkpoint",
    "ConsistencyProof",
    "DeviceKey",
    "Evidence",
    "Failure",
    "LedgerClientError",
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
