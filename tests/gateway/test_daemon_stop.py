"""A stop that cannot hang on a lost cancellation, and says where it waits when slow.

On Python 3.11 ``asyncio.wait_for`` returns the result instead of raising when a
cancellation arrives as the awaited future completes (aiomqtt awaits every
acknowledgement so): the cancelled task runs on. The daemon's ``_stop`` cancels
such a task again; the uplink's announcer raises the lost cancellation itself.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway import daemon
from gateway.uplink import _raise_lost_cancel


async def test_a_task_that_loses_its_cancellation_is_cancelled_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(daemon, "_STOP_TASK_S", 0.05)
    lost = asyncio.Event()

    async def waits_on() -> None:
        await asyncio.sleep(3600)

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            lost.set()  # what wait_for does when the future completed meanwhile
        await waits_on()

    task = asyncio.create_task(stubborn(), name="gateway.stubborn")
    calm = asyncio.create_task(asyncio.sleep(3600), name="gateway.calm")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="gateway.daemon"):
        async with asyncio.timeout(5):
            await daemon._stop(task, calm)
    assert lost.is_set() and task.cancelled() and calm.cancelled()
    (record,) = caplog.records
    assert record.getMessage().startswith(
        "gateway.stubborn went on after it was cancelled, at stubborn (test_daemon_stop.py:"
    )
    assert "> waits_on (test_daemon_stop.py:" in record.getMessage()


async def test_a_slow_stop_names_the_tasks_and_where_they_wait(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def uplink_finish() -> None:
        await asyncio.Event().wait()

    task = asyncio.create_task(uplink_finish(), name="gateway.uplink")
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="gateway.daemon"):
        daemon._report_slow_stop()
    task.cancel()
    (record,) = caplog.records
    text = record.getMessage()
    assert text.startswith(f"still stopping after {daemon._SLOW_STOP_S:g} s, waiting in: ")
    assert "gateway.uplink at uplink_finish (test_daemon_stop.py:" in text
    assert "> wait (locks.py:" in text  # down to the Event it waits on


async def test_the_announcer_raises_a_cancellation_it_was_not_given() -> None:
    reached = False

    async def announcer() -> None:
        nonlocal reached
        current = asyncio.current_task()
        assert current is not None
        current.cancel()  # requested, and (as if lost by wait_for) never delivered yet
        _raise_lost_cancel()
        reached = True

    task = asyncio.create_task(announcer())
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not reached


async def test_no_cancellation_no_raise() -> None:
    _raise_lost_cancel()  # nothing requested: it returns
