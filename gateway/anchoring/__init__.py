"""Anchoring checkpoint digests to ledgers: the backend interface and the state machine."""
