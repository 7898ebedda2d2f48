"""A redelivered copy of an old reading is not the sensor speaking (docs/bundle-format.md §9 8 f).

An MQTT broker redelivers a message whose acknowledgement was lost when the gateway
reconnects, possibly while the node itself is silent. The copy is a duplicate (its dedup
key is logged) and is not logged again; it must not reset the silence tracker either, or
the log's silence grows past the sensor's allowance with no gap record, and the
regulator's verifier rightly fails the box. Real Log, Store, Ingest and SilenceTracker;
the verifier is the real checklist.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from gateway.config import LogConfig
from gateway.ingest import Ingest
from gateway.keys import DeviceKey, device_id_for
from gateway.log import Log
from gateway.pipeline import Event, Reading, Value
from gateway.silence import SilenceTracker, expectation
from gateway.store import Store
from ledger_client.bundle import Bundle
from ledger_client.note import Signer
from ledger_client.verify import verify_bundle

SEED = bytes(range(0x60, 0x80))
"""A test key seed: never use it for anything real."""
T0 = 1_767_225_600 * 10**9
S = 10**9


def key() -> DeviceKey:
    device = device_id_for(Signer.from_seed("x", SEED).public_key)
    return DeviceKey(device, Signer.from_seed(f"riverseal/{device}", SEED))


def reading(seq: int, at_s: float) -> Reading:
    return Reading(
        "node-1",
        (Value("ph", 7.0, "pH"),),
        T0 + round(at_s * S),
        src_seq=seq,
        dedup_key=f"src_seq:{seq}",
    )


async def run(tmp_path: Path) -> Bundle:
    from gateway.export import export_bundle

    now = [T0]
    async with Store(tmp_path / "log.sqlite") as store:
        log = Log(store, key(), clock=lambda: now[0], clock_state=lambda: "synced")
        await log.open()
        expect = expectation(10.0)  # allowance 15 s, repeat 60 s
        tracker = SilenceTracker({"node-1": expect}, T0)
        # The writer's clock stands still, so no commit window could ever close: none.
        ingest = Ingest(log, LogConfig(commit_window_s=0.0), monotonic=lambda: 0.0, silence=tracker)
        writer = asyncio.create_task(ingest.run())
        sensors = {"node-1": {"interval_s": 10.0, "allowance_s": 15.0, "repeat_s": 60.0}}
        await ingest.submit_event(Event("boot", T0, {"sensors": sensors, "previous": None}))
        for seq, at in ((1, 1.0), (2, 11.0)):
            now[0] = T0 + round(at * S)
            assert await ingest.submit(reading(seq, at))
        # Reconnected at 25 s: the broker redelivers message 2, whose PUBACK was lost.
        now[0] = T0 + 25 * S
        assert not await ingest.submit(reading(2, 25.0))
        # The node itself is silent until 38 s: the poll is due 15 s after the last
        # reading the log holds (11 s), not after the copy.
        for gap in tracker.poll(T0 + 38 * S - 1):
            await ingest.submit_gap(gap)
        now[0] = T0 + 38 * S
        assert await ingest.submit(reading(3, 38.0))
        await ingest.close()
        await writer
        return await export_bundle(log)


def test_a_redelivered_copy_does_not_reset_the_silence(tmp_path: Path) -> None:
    bundle = asyncio.run(run(tmp_path))
    report = verify_bundle(
        bundle, [Signer.from_seed(f"riverseal/{key().device_id}", SEED).verifier()],
        now=datetime(2027, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    assert report.failure_count == 0, [f.described() for f in report.failures]
    (spans,) = [c.gap_spans for c in report.sensors.values()]
    assert [(g.start[11:19], g.end[11:19], g.reason) for g in spans] == [
        ("00:00:11", "00:00:38", "silent")
    ]
