"""Fixtures for the gateway tests: a recording Sink and gateway processes."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.gateway.recording_sink import RecordingSink


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """``gateway run`` processes a test started (daemon_procs.start); killed at its end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait()
