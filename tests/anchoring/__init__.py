"""anchoring tests."""
