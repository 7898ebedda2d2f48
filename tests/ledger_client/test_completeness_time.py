"""Step 8 over time and sequence: late arrivals (8 d), records that failed step 2 (8 c),
silences against the declared sensors (8 f), and the per-sensor summaries.

Every bundle here is built purely (lc_bundles.BundleMaker), with the records' times
set explicitly: ``Box`` writes what a gateway would log, in log order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ledger_client.records import format_time
from ledger_client.verify import GapSpan, Report, verify_bundle
from ledger_client.verify_stream import verify_source
from tests.ledger_client.lc_bundles import NOW, T0_NS, BundleMaker
from tests.ledger_client.v2_bundles import manifest_for, notes_for, v2_members, write_container

DECLARED = {
    "ph-1": {"interval_s": 20, "allowance_s": 30, "repeat_s": 60},
    "do-1": {"interval_s": 20, "allowance_s": 30, "repeat_s": 60},
}
"""What the boot events below declare: each sensor read every 20 s, silent after 30 s,
a gap record at most every 60 s while it lasts."""


def at(seconds: float) -> str:
    """The time ``seconds`` after 2026-03-01T00:00:00Z, as the gateway writes it."""
    return format_time(T0_NS + round(seconds * 1e9))


class Box:
    """A log being written, record by record, with explicit times."""

    def __init__(self) -> None:
        self.m = BundleMaker()
        self.recs: list[dict[str, Any]] = []
        self.src: dict[str, int] = {}

    def add(self, rec: dict[str, Any]) -> int:
        self.recs.append(rec)
        return len(self.recs) - 1

    def boot(self, when: float, sensors: dict[str, Any] | None = None, previous: Any = None) -> int:
        detail: dict[str, Any] = {"version": "0.1.0", "previous": previous}
        if sensors is not None:
            detail["sensors"] = sensors
        rec = self.m.event("boot", detail)
        rec["time"] = at(when)
        return self.add(rec)

    def event(self, name: str, when: float, detail: Any = None) -> int:
        rec = self.m.event(name, detail)
        rec["time"] = at(when)
        return self.add(rec)

    def reading(
        self,
        sensor: str,
        when: float,
        src: int | None = None,
        flags: tuple[int | None, ...] = (),
        clock: str = "synced",
    ) -> int:
        rec = self.m.reading(sensor)
        rec["time"] = rec["sensor_time"] = at(when)
        rec["clock"] = clock
        self.src[sensor] = src if src is not None else self.src.get(sensor, 99) + 1
        rec["src_seq"] = self.src[sensor]
        if flags:
            value = rec["values"][0]
            rec["values"] = [
                {**value, "qc": {"flag": f, "tests": str(f) * 4}} if f is not None else value
                for f in flags
            ]
        return self.add(rec)

    def readings(self, sensor: str, start: float, end: float, every: float = 20) -> None:
        when = start
        while when <= end:
            self.reading(sensor, when)
            when += every

    def gap(
        self,
        sensor: str,
        start: float,
        end: float,
        when: float | None = None,
        reason: str = "silent",
        src: tuple[int, int] | None = None,
    ) -> int:
        rec = self.m.gap(sensor, reason, src)
        rec["from"], rec["to"], rec["time"] = at(start), at(end), at(end if when is None else when)
        return self.add(rec)

    def raws(self) -> list[bytes]:
        return [self.m.sign(rec, i) for i, rec in enumerate(self.recs)]

    def verify(self, entries: list[bytes] | None = None) -> Report:
        bundle = self.m.build(self.recs, [len(self.recs)], entries=entries)
        return verify_bundle(bundle, now=NOW)

    def verify_v2(self, path: Path, jobs: int) -> Report:
        """The same log as a v2 bundle, its entries checked by ``jobs`` worker processes."""
        raws = self.raws()
        notes = notes_for(self.m.signer, self.m.origin, raws, [len(raws)])
        manifest = manifest_for(self.m.signer, self.m.origin, self.m.device, notes)
        write_container(path, v2_members(raws, manifest, len(raws)))
        return verify_source(path, None, now=NOW, jobs=jobs)


def failures(report: Report) -> list[str]:
    return [str(f) for f in report.failures]


def notes(report: Report, *words: str) -> list[str]:
    return [n for n in report.notes if all(w in n for w in words)]


# --- 8 d: late arrivals --------------------------------------------------------------------


def src_box(*seqs: int) -> Box:
    box = Box()
    box.boot(0, DECLARED)
    for k, n in enumerate(seqs):
        box.reading("ph-1", 20 * (k + 1), src=n)
    return box


def test_messages_redelivered_out_of_order_verify() -> None:
    report = src_box(1, 2, 5, 3, 4, 6).verify()
    assert failures(report) == []
    assert report.sensors["ph-1"].late == 2
    assert not notes(report, "src_seq")


def test_a_number_that_never_came_still_fails() -> None:
    report = src_box(1, 2, 5, 3, 6).verify()  # 4 never came, and no gap record says so
    assert failures(report) == [
        "entry 3: completeness: sensor ph-1: src_seq 4 skipped after entry 2 and no gap "
        "record covers it"
    ]
    assert report.failures[0].sensor == "ph-1" and report.failures[0].time == at(60)


def test_a_gap_record_after_the_readings_covers_the_hole() -> None:
    box = src_box(1, 2, 5)
    box.gap("ph-1", 40, 60, when=75, reason="source sequence gap", src=(3, 4))  # window closed
    box.reading("ph-1", 80, src=6)
    assert failures(box.verify()) == []


def test_a_reading_after_the_gap_that_declared_it_lost_is_accepted_and_noted() -> None:
    box = src_box(1, 2, 5)
    box.gap("ph-1", 40, 60, when=75, reason="source sequence gap", src=(3, 4))
    box.reading("ph-1", 80, src=3)  # redelivered after the gateway gave up on it
    box.reading("ph-1", 90, src=6)
    report = box.verify()
    assert failures(report) == []
    assert report.sensors["ph-1"].late == 1
    assert notes(report, "ph-1", "1 reading(s) arrived after a gap record declared them lost")


def test_a_restarted_counter_starts_a_run_and_its_holes_count() -> None:
    assert failures(src_box(7, 8, 9, 0, 1, 2).verify()) == []  # the node restarted at 0
    report = src_box(7, 8, 9, 0, 1, 3).verify()  # … and then lost 2
    assert failures(report) == [
        "entry 6: completeness: sensor ph-1: src_seq 2 skipped after entry 5 and no gap "
        "record covers it"
    ]


def test_a_stray_old_number_is_not_taken_for_a_restart() -> None:
    # 3 again (a resend with a new time), then the count goes on: not a new run at 3.
    report = src_box(1, 2, 3, 4, 5, 3, 6, 7).verify()
    assert failures(report) == []


def test_numbers_due_before_the_first_reading_may_arrive_late() -> None:
    assert failures(src_box(5, 3, 4, 6).verify()) == []


def test_an_open_number_is_decided_once_the_run_is_far_past_it() -> None:
    box = src_box(1, 3)
    box.reading("ph-1", 100, src=1003)
    box.reading("ph-1", 120, src=1004)  # 2 is now more than 1,000 below: decided
    box.reading("ph-1", 140, src=2)  # too late to be an arrival of run 1–1004
    report = box.verify()
    assert "entry 2: completeness: sensor ph-1: src_seq 2 skipped after entry 1" in (
        " ".join(failures(report))
    )


def test_a_skip_across_a_gateway_restart_is_noted_not_failed() -> None:
    box = src_box(1, 2)
    box.event("stop", 50, {"cause": "clean"})
    box.boot(60, DECLARED, {"index": 3, "time": at(50), "stop": "clean"})
    box.gap("ph-1", 40, 60, reason="gateway-down")
    box.reading("ph-1", 70, src=6)  # 3–5 were lost while it was down
    report = box.verify()
    assert failures(report) == []
    assert notes(report, "ph-1", "3 src_seq number(s)", "across a gateway restart")


def test_numbers_awaited_when_the_gateway_died_are_noted_not_failed() -> None:
    box = src_box(1, 2, 5)  # 3–4 awaited…
    box.boot(200, DECLARED, {"index": 3, "time": at(60), "stop": "unclean"})  # … it died
    box.gap("ph-1", 60, 200, reason="gateway-down")
    box.reading("ph-1", 210, src=6)
    report = box.verify()
    assert failures(report) == []
    assert notes(report, "ph-1", "2 src_seq number(s)", "stopped uncleanly")


# --- 8 c: a record that failed step 2 is that one failure ------------------------------------


def test_a_malformed_record_is_only_its_step_2_failure() -> None:
    box = src_box(1, 2, 3, 4)
    raws = box.raws()
    raws[2] = raws[2].replace(b'{"rec":', b'{"rec": ', 1)  # in the tree, but not canonical
    report = box.verify(raws)
    assert [(f.entry, f.check) for f in report.failures] == [(2, "record")]
    assert "canonical" in report.failures[0].reason
    assert report.sensors["ph-1"].readings == 3


def test_a_record_of_another_device_is_only_its_step_2_failure() -> None:
    box = src_box(1, 2, 3, 4)
    raws = box.raws()
    raws[2] = box.m.sign({**box.recs[2], "device": "rs-elsewhere"}, 2)
    report = box.verify(raws)
    assert [(f.entry, f.check) for f in report.failures] == [(2, "record")]
    assert "rs-elsewhere" in report.failures[0].reason


def test_more_missing_records_than_unreadable_entries_still_fail() -> None:
    box = src_box(1, 2)
    box.m.seq["ph-1"] += 1  # a ph-1 record never logged (the gateway skipped a seq)
    box.reading("ph-1", 60, src=3)
    box.reading("ph-1", 80, src=4)
    raws = box.raws()
    raws[3] = raws[3].replace(b'{"rec":', b'{"rec": ', 1)
    report = box.verify(raws)
    assert (2, "completeness") not in [(f.entry, f.check) for f in report.failures]
    assert [(f.entry, f.check) for f in report.failures] == [(3, "record"), (4, "completeness")]
    assert "seq 2–3 missing" in report.failures[1].reason


# --- 8 f: silence -----------------------------------------------------------------------------


def steady(box: Box, start: float, end: float, sensors: tuple[str, ...] = ("ph-1",)) -> None:
    when = start
    while when <= end:
        for s in sensors:
            box.reading(s, when)
        when += 20


def test_a_reading_after_a_long_silence_with_no_gap_fails_naming_sensor_and_times() -> None:
    box = Box()
    box.boot(0, {"ph-1": DECLARED["ph-1"]})
    steady(box, 10, 90)
    late = box.reading("ph-1", 400)
    report = box.verify()
    assert failures(report) == [
        f"entry {late}: completeness: sensor ph-1: silent from {at(90)} to {at(400)} "
        "(5 min 10 s) with no gap record"
    ]
    f = report.failures[0]
    assert (f.sensor, f.time) == ("ph-1", at(400))


def test_silence_tiled_by_gap_records_passes() -> None:
    box = Box()
    box.boot(0, {"ph-1": DECLARED["ph-1"]})
    steady(box, 10, 90)
    # As the gateway's silence tracker writes them: noticed after the allowance, then at
    # most one a repeat period, and a last one up to the reading that ends it.
    box.gap("ph-1", 90, 121)
    box.gap("ph-1", 121, 181)
    box.gap("ph-1", 181, 241, reason="timeout")
    box.gap("ph-1", 241, 400, reason="timeout")
    box.reading("ph-1", 400)
    steady(box, 420, 500)
    report = box.verify()
    assert failures(report) == []
    spans = report.sensors["ph-1"].gap_spans
    assert spans == (
        GapSpan(at(90), at(181), "silent", 2),
        GapSpan(at(181), at(400), "timeout", 2),
    )


def test_a_gap_that_starts_after_an_uncovered_silence_fails() -> None:
    box = Box()
    box.boot(0, {"ph-1": DECLARED["ph-1"]})
    steady(box, 10, 90)
    gap = box.gap("ph-1", 200, 260)
    box.reading("ph-1", 260)
    assert failures(box.verify()) == [
        f"entry {gap}: completeness: sensor ph-1: silent from {at(90)} to {at(200)} "
        "(1 min 50 s, where this gap starts) with no gap record"
    ]


def test_a_gap_committed_before_a_reading_received_earlier_is_fine() -> None:
    box = Box()
    box.boot(0, {"ph-1": DECLARED["ph-1"]})
    steady(box, 10, 90)
    box.gap("ph-1", 90, 125)  # the tracker's poll at 125 …
    box.reading("ph-1", 124)  # … raced a reading received at 124, committed after it
    steady(box, 140, 200)
    assert failures(box.verify()) == []


def test_a_sensor_removed_with_a_config_event_is_no_longer_expected() -> None:
    box = Box()
    box.boot(0, DECLARED)
    steady(box, 10, 90, ("ph-1", "do-1"))
    box.event("stop", 95, {"cause": "clean"})
    box.boot(600, {"ph-1": DECLARED["ph-1"]}, {"index": len(box.recs) - 1, "time": at(95)})
    box.gap("ph-1", 90, 600, reason="gateway-down")
    box.event("config", 600, {"added": [], "removed": ["do-1"], "changed": [], "sensors": {}})
    steady(box, 610, 2000)
    report = box.verify()
    assert failures(report) == []
    config = report.timeline[-1]
    assert (config.event, config.removed, config.describe()) == (
        "config",
        ("do-1",),
        "sensors changed: removed do-1",
    )


def test_a_sensor_that_just_stops_while_declared_fails_at_the_end() -> None:
    box = Box()
    box.boot(0, DECLARED)
    steady(box, 10, 90, ("ph-1", "do-1"))
    steady(box, 110, 2000)  # do-1 says nothing more, and nothing says why
    report = box.verify()
    last_do = max(i for i, r in enumerate(box.recs) if r.get("sensor") == "do-1")
    assert failures(report) == [
        f"entry {last_do}: completeness: sensor do-1: silent since {at(90)}, 31 min 40 s before "
        f"the bundle's last record ({at(1990)}), with no gap record: removed without a config "
        "event, or its records were deleted"
    ]


def test_a_clean_stop_and_a_boot_with_gateway_down_gaps_pass() -> None:
    box = Box()
    box.boot(0, DECLARED)
    steady(box, 10, 90, ("ph-1", "do-1"))
    stop = box.event("stop", 95, {"cause": "clean"})
    box.event("key-rotation", 2000, {"old_key": "…", "new_key": "…"})  # written while stopped
    boot = box.boot(3600, DECLARED, {"index": stop + 1, "time": at(2000), "stop": "clean"})
    box.gap("ph-1", 90, 3600, reason="gateway-down")
    box.gap("do-1", 90, 3600, reason="gateway-down")
    steady(box, 3610, 3700, ("ph-1", "do-1"))
    report = box.verify()
    assert failures(report) == []
    assert [t.event for t in report.timeline] == ["boot", "stop", "key-rotation", "boot"]
    again = report.timeline[3]
    assert (again.index, again.previous_stop, again.downtime_s, again.watched) == (
        boot,
        "clean",
        1600.0,
        2,
    )
    assert again.describe() == (
        f"boot after a clean stop, down 26 min 40 s (since {at(2000)}), 2 sensor(s) watched"
    )
    assert report.to_json()["timeline"][3] == {
        "index": boot,
        "time": at(3600),
        "event": "boot",
        "previous_stop": "clean",
        "previous_time": at(2000),
        "downtime_s": 1600.0,
        "watched": 2,
    }


def test_downtime_without_its_gateway_down_gap_fails() -> None:
    box = Box()
    box.boot(0, {"ph-1": DECLARED["ph-1"]})
    steady(box, 10, 90)
    box.boot(3600, {"ph-1": DECLARED["ph-1"]}, {"index": 5, "time": at(90), "stop": "unclean"})
    first = box.reading("ph-1", 3610)
    assert failures(box.verify()) == [
        f"entry {first}: completeness: sensor ph-1: silent from {at(90)} to {at(3610)} "
        "(58 min 40 s) with no gap record"
    ]


def test_a_bundle_ending_in_a_stop_expects_nothing_more() -> None:
    box = Box()
    box.boot(0, DECLARED)
    steady(box, 10, 90, ("ph-1", "do-1"))
    box.event("stop", 95, {"cause": "clean"})
    box.event("key-rotation", 7200, {"old_key": "…", "new_key": "…"})  # while stopped
    assert failures(box.verify()) == []


def test_sensors_no_event_declares_are_named_in_a_note() -> None:
    box = Box()  # a time range that starts mid-run: no boot event
    steady(box, 10, 90, ("ph-1", "do-1"))
    box.reading("ph-1", 4000)
    report = box.verify()
    assert failures(report) == []
    assert notes(report, "silence not checked", "do-1, ph-1")


def test_a_boot_without_sensors_declares_none() -> None:
    box = Box()
    box.boot(0, DECLARED)
    steady(box, 10, 90)
    box.boot(200, None, {"index": 5, "time": at(90), "stop": "unclean"})  # an older gateway
    box.reading("ph-1", 5000)
    report = box.verify()
    assert failures(report) == []
    assert notes(report, "silence not checked", "ph-1")
    assert report.timeline[1].watched is None


# --- the per-sensor summary -------------------------------------------------------------------


def test_the_summary_counts_qc_flags_times_and_unsynced_records() -> None:
    box = Box()
    box.boot(0, {"ph-1": DECLARED["ph-1"]})
    box.reading("ph-1", 10, flags=(1, 1))
    box.reading("ph-1", 30, flags=(3, None), clock="unsynced")
    box.reading("ph-1", 50, flags=(4, 9))
    box.gap("ph-1", 50, 100, reason="timeout")
    box.gap("ph-1", 100, 150, reason="timeout", when=150)
    box.gap("ph-1", 160, 170, reason="timeout")  # does not touch the one before
    box.reading("ph-1", 170)
    counts = box.verify().sensors["ph-1"]
    assert (counts.readings, counts.gaps, counts.first, counts.last) == (4, 3, at(10), at(170))
    assert counts.unsynced == 1
    assert counts.qc == {"1": 2, "3": 1, "4": 1, "9": 1}
    assert counts.gap_spans == (
        GapSpan(at(50), at(150), "timeout", 2),
        GapSpan(at(160), at(170), "timeout", 1),
    )
    assert counts.to_json()["gap_spans"][0] == {
        "from": at(50),
        "to": at(150),
        "reason": "timeout",
        "records": 2,
    }
    assert set(counts.to_json()) == {
        "readings",
        "gaps",
        "first",
        "last",
        "unsynced",
        "qc",
        "late",
        "gap_spans",
        "gap_spans_more",
    }


@pytest.mark.parametrize("more", [0, 5])
def test_gap_spans_are_capped(more: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ledger_client.completeness.MAX_GAP_SPANS", 3)
    box = Box()
    for k in range(3 + more):
        box.gap("ph-1", 100 * k, 100 * k + 10, reason="crc")  # never touching
    counts = box.verify().sensors["ph-1"]
    assert (len(counts.gap_spans), counts.gap_spans_more) == (3, more)


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_v2_bundle_checked_by_workers_says_the_same(tmp_path: Path, jobs: int) -> None:
    box = Box()
    box.boot(0, {"ph-1": DECLARED["ph-1"]})
    for k, n in enumerate((1, 2, 5, 3, 4, 6)):
        box.reading("ph-1", 20 * (k + 1), src=n, flags=(1,))
    box.reading("ph-1", 500, src=7)  # silent from 120 with no gap record
    v1 = box.verify()
    v2 = box.verify_v2(tmp_path / "bundle.tar", jobs)
    assert (
        failures(v2)
        == failures(v1)
        == [
            f"entry 7: completeness: sensor ph-1: silent from {at(120)} to {at(500)} (6 min 20 s) "
            "with no gap record"
        ]
    )
    assert v2.sensors == v1.sensors
    assert v2.sensors["ph-1"].late == 2 and v2.sensors["ph-1"].qc == {"1": 6}
    assert v2.timeline == v1.timeline
