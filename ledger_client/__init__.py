"""riverseal's verifier library: Merkle log maths, signed notes, records, bundles.

Pure and synchronous: it reads bytes and returns values or raises a
``LedgerClientError``. Nothing here imports the gateway, serial or MQTT code;
the only third-party dependency is PyNaCl.

``verify_source`` verifies any source and returns a ``Report`` whose ``level``
is the verdict. Its one seam for IO is step 7's anchor check: a third party
confirms receipts against a ledger of its choice by passing objects that
satisfy ``AnchorChecker`` (``handles``, and ``check`` returning an
``AnchorEvidence`` or raising ``AnchorCheckError`` or ``LedgerUnreachable``) as
``anchor_checkers``; ``KeptCheckpoint`` carries a checkpoint kept from an earlier
bundle (``kept``). The shipped checkers (``ledger_client.evm``,
``ledger_client.tsa``) are imported only by who uses them.
"""

from .anchors import AnchorChecker, AnchorEvidence
from .bundle import AnchorReceipt, Bundle, BundleEntry, ConsistencyProof, DeviceKey
from .bundle_v2 import Manifest, read_entries
from .checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from .errors import (
    AnchorCheckError,
    LedgerClientError,
    LedgerUnreachable,
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
from .lineage import KeptCheckpoint
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
from .verify import AnchorResult, Failure, Level, Report, SensorCounts, StepResult, verify_bundle
from .verify_stream import verify_source

__all__ = [
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
