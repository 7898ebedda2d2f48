"""ledger_client tests."""
