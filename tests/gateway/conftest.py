"""Fixtures for the gateway tests: a recording Sink."""

from __future__ import annotations

import pytest

from tests.gateway.recording_sink import RecordingSink


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()
