"""Fixtures for the simulator tests: a real Mosquitto broker per test."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.broker import MOSQUITTO, Broker


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto is not installed: run scripts/setup --dev")
    broker = Broker(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
