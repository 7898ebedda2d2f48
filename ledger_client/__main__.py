"""``python -m ledger_client``: the same as ``ledger-verify``."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
