"""Fixtures for ledger_client tests: shared test vectors and bundles built purely.

The builder itself lives in lc_bundles.py (importable from test modules too).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from ledger_client.bundle import Bundle
from tests.ledger_client.lc_bundles import SHARED, BundleMaker


@pytest.fixture(scope="session")
def shared() -> Path:
    """The shared folder checked out beside the repository (test vectors, reference docs)."""
    path = SHARED.resolve()
    if not path.is_dir():
        pytest.fail(f"shared test vectors not found at {path} (../shared must sit beside the repo)")
    return path


@pytest.fixture
def maker() -> BundleMaker:
    return BundleMaker()


@pytest.fixture
def bundle(maker: BundleMaker) -> Bundle:
    """A realistic small bundle: 62 entries, 3 sensors, a gap, 3 checkpoints, a local anchor."""
    return maker.build(maker.standard_records(), [20, 45, 62])


@pytest.fixture
def write_bundle(tmp_path: Path) -> Callable[[Bundle | Mapping[str, Any] | str | bytes], Path]:
    """Write a bundle (or its JSON document, or raw text) to a file and return its path."""
    counter = iter(range(10**6))

    def write(what: Bundle | Mapping[str, Any] | str | bytes) -> Path:
        path = tmp_path / f"bundle-{next(counter)}.json"
        if isinstance(what, Bundle):
            path.write_text(what.dumps(), encoding="utf-8")
        elif isinstance(what, bytes):
            path.write_bytes(what)
        elif isinstance(what, str):
            path.write_text(what, encoding="utf-8")
        else:
            path.write_text(json.dumps(what, ensure_ascii=False), encoding="utf-8")
        return path

    return write
