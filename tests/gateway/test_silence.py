"""The silence tracker with an explicit clock: when gaps fall due, what they say, and
that readings and gaps cover time without holes or overlaps."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.pipeline import Gap
from gateway.silence import SILENT, Expectation, SilenceTracker, expectation

S = 1_000_000_000
T0 = 1_800_000_000 * S
# interval 10 s: silent after 15 s, a gap at most every 60 s while it lasts
TEN = expectation(10.0)


def span(g: Gap) -> tuple[int, int]:
    return ((g.from_ns - T0) // S, (g.to_ns - T0) // S)


def test_expectation_defaults() -> None:
    assert expectation(10.0) == Expectation(allowance_ns=15 * S, repeat_ns=60 * S)
    assert expectation(10.0, timeout_s=8.0).allowance_ns == 18 * S  # the timeout, if longer
    assert expectation(300.0).repeat_ns == 300 * S  # never more often than the interval
    with pytest.raises(ValueError, match="interval_s"):
        expectation(0)


def test_a_sensor_that_never_reports_is_silent_from_the_start() -> None:
    t = SilenceTracker({"a": TEN}, T0)
    assert t.poll(T0 + 15 * S) == []  # exactly the allowance: not yet
    assert t.next_due_ns() == T0 + 15 * S + 1
    (g,) = t.poll(T0 + 16 * S)
    assert (g.sensor, g.reason, span(g)) == ("a", SILENT, (0, 16))
    assert t.poll(T0 + 75 * S) == []  # continuing gaps are rate-limited
    assert t.next_due_ns() == T0 + 76 * S
    (g2,) = t.poll(T0 + 76 * S)
    assert (g2.from_ns, g2.to_ns) == (g.to_ns, T0 + 76 * S)  # from the previous gap's end
    silence = t.silence("a")
    assert silence is not None
    assert (silence.since_ns, silence.reason) == (T0, SILENT)


def test_the_closing_gap_reaches_the_first_new_reading_and_names_the_last_refusal() -> None:
    t = SilenceTracker({"a": TEN, "b": TEN}, T0)
    assert t.reading("a", T0 + 10 * S) == []
    assert t.reading("b", T0 + 10 * S) == []
    t.reject("a", "crc")
    t.reject("a", "timeout")
    gaps = t.poll(T0 + 30 * S)
    assert [(g.sensor, g.reason, span(g)) for g in gaps] == [
        ("a", "timeout", (10, 30)),
        ("b", SILENT, (10, 30)),
    ]
    (g,) = t.reading("a", T0 + 42 * S)
    assert (g.reason, span(g)) == ("timeout", (30, 42))
    assert t.silence("a") is None
    assert t.silence("b") is not None
    # After the reading the refusal is history: the next silence is plain "silent".
    t.reading("a", T0 + 50 * S)
    (g,) = [g for g in t.poll(T0 + 70 * S) if g.sensor == "a"]
    assert (g.reason, span(g)) == (SILENT, (50, 70))


def test_a_late_reading_brings_its_own_gap_when_no_poll_saw_the_silence() -> None:
    t = SilenceTracker({"a": TEN}, T0)
    assert t.reading("a", T0 + 15 * S) == []  # exactly the allowance: on time
    (g,) = t.reading("a", T0 + 40 * S)
    assert span(g) == (15, 40)
    assert t.poll(T0 + 50 * S) == []


def test_a_reading_stamped_inside_the_gap_just_written_adds_no_overlap() -> None:
    t = SilenceTracker({"a": TEN}, T0)
    assert len(t.poll(T0 + 20 * S)) == 1
    assert t.reading("a", T0 + 19 * S) == []  # raced the poll: it lies inside that gap
    (g2,) = t.poll(T0 + 40 * S)
    assert span(g2) == (20, 40)  # starts where the last gap ended, not at 19


def test_other_sensors_and_refusals_are_ignored() -> None:
    t = SilenceTracker({"a": TEN}, T0)
    t.reject("zz", "crc")
    assert t.reading("zz", T0 + 100 * S) == []
    assert t.silence("zz") is None
    assert SilenceTracker({}, T0).next_due_ns() is None


# --- coverage: readings and gaps tile time ------------------------------------------------------


# Steps around the allowances and repeat periods of the intervals below, with jitter.
STEPS = st.builds(
    lambda s, ms: s * S + ms * 1_000_000,
    st.sampled_from([0, 0, 1, 5, 9, 14, 15, 16, 30, 44, 59, 60, 61, 67, 68, 120, 200]),
    st.integers(0, 999),
)


@settings(max_examples=400, deadline=None)
@given(
    interval_s=st.sampled_from([1.0, 10.0, 45.0]),
    events=st.lists(
        st.tuples(st.sampled_from(["reading", "poll", "reject"]), STEPS),
        max_size=60,
    ),
)
def test_readings_and_gaps_cover_time_without_overlap(
    interval_s: float, events: list[tuple[str, int]]
) -> None:
    expect = expectation(interval_s)
    t = SilenceTracker({"a": expect}, T0)
    now = T0
    readings: list[int] = []
    gaps: list[Gap] = []
    for kind, dt in events:
        now += dt
        if kind == "reading":
            gaps += t.reading("a", now)
            readings.append(now)
        elif kind == "poll":
            gaps += t.poll(now)
        else:
            t.reject("a", "timeout")
    end = now
    gaps += t.poll(end)

    for g in gaps:
        assert g.from_ns < g.to_ns
        assert g.reason in ("timeout", SILENT)
    # No two gaps overlap; no reading lies strictly inside a gap.
    ordered = sorted(gaps, key=lambda g: g.from_ns)
    for a, b in itertools.pairwise(ordered):
        assert a.to_ns <= b.from_ns
    for r in readings:
        assert not any(g.from_ns < r < g.to_ns for g in gaps)
    # Between consecutive anchors (the start, then each reading), either the wait was
    # within the allowance and there is no gap, or gaps tile it exactly end to end.
    anchors = [T0, *readings]
    for lo, hi in itertools.pairwise(anchors):
        inside = [g for g in ordered if lo <= g.from_ns and g.to_ns <= hi]
        if hi - lo <= expect.allowance_ns:
            assert inside == []
        else:
            assert inside, (lo, hi)
            assert inside[0].from_ns == lo
            assert inside[-1].to_ns == hi
            for a, b in itertools.pairwise(inside):
                assert a.to_ns == b.from_ns
    # The tail after the last reading is covered as far as the rules allow.
    last = anchors[-1]
    tail = [g for g in ordered if g.from_ns >= last]
    if end - last > expect.allowance_ns:
        assert tail[0].from_ns == last
        assert end - tail[-1].to_ns < expect.repeat_ns  # the final poll is at `end`
        for a, b in itertools.pairwise(tail):
            assert a.to_ns == b.from_ns
    else:
        assert tail == []
    # Every gap lies between two anchors or in the tail (none straddles a reading).
    bounds = list(zip(anchors, [*anchors[1:], end], strict=True))
    for g in gaps:
        assert any(lo <= g.from_ns and g.to_ns <= hi for lo, hi in bounds)
