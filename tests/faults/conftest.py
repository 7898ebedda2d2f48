"""Fixtures of the fault harness: a broker that keeps its state on disk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.persistent_broker import MOSQUITTO, NO_LOSS, PersistentBroker

__all__ = ["persistent_broker"]


@pytest.fixture
def persistent_broker(tmp_path: Path) -> Iterator[PersistentBroker]:
    """A Mosquitto of this test's own, configured for no loss (docs/operations.md)."""
    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto is not installed: run scripts/setup --dev")
    workdir = tmp_path / "broker"
    workdir.mkdir()
    broker = PersistentBroker(workdir, NO_LOSS)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
