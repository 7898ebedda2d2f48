"""QARTOD edge QC: each test on hand-built series with exact boundaries, the stateful
stream (history, refill, window), the engine (units, overrides, counts) and fuzzing."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config.qc import DEFAULT_LIMITS, QC_TESTS, QcConfig, QcLimits
from gateway.qc import (
    FAIL,
    FLAGS,
    MISSING,
    NOT_EVALUATED,
    PASS,
    SUSPECT,
    QcEngine,
    Stream,
    aggregate,
    flat_line,
    gross_range,
    rate_of_change,
    spike,
)

NAN, INF = math.nan, math.inf
S = 1_000_000_000  # one second in ns

# --- gross range -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "flag"),
    [
        (-0.5, FAIL),
        (0.0, SUSPECT),  # the fail span's end passes that span, but not the suspect one
        (5.75, SUSPECT),
        (6.0, PASS),  # span ends pass
        (7.2, PASS),
        (9.0, PASS),
        (9.25, SUSPECT),
        (14.0, SUSPECT),
        (14.25, FAIL),
        (NAN, MISSING),
        (INF, MISSING),
        (-INF, MISSING),
    ],
)
def test_gross_range_boundaries(value: float, flag: int) -> None:
    assert gross_range(value, (0.0, 14.0), (6.0, 9.0)) == flag


def test_gross_range_without_spans_is_not_evaluated() -> None:
    assert gross_range(7.0, None, None) == NOT_EVALUATED
    assert gross_range(20.0, (0.0, 14.0), None) == FAIL
    assert gross_range(10.0, None, (6.0, 9.0)) == SUSPECT


def test_gross_range_matches_the_documented_ioos_qc_example() -> None:
    # ioos-qc docs: inp 0..12, suspect_span [0, 8], fail_span [0, 10]
    flags = [gross_range(float(x), (0.0, 10.0), (0.0, 8.0)) for x in range(13)]
    assert flags == [1, 1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 4, 4]


# --- spike -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "flag"),
    [
        (7.0, PASS),
        (7.25, PASS),  # exactly the suspect threshold: passes
        (6.75, PASS),
        (7.5, SUSPECT),  # exactly the fail threshold: suspect, not fail
        (6.5, SUSPECT),
        (7.625, FAIL),
        (6.25, FAIL),
        (NAN, MISSING),
    ],
)
def test_spike_boundaries(value: float, flag: int) -> None:
    # reference is the mean of the two previous values: (6.75 + 7.25) / 2 = 7.0
    assert spike(value, 7.25, 6.75, 0.25, 0.5) == flag


def test_spike_needs_two_previous_values_and_a_threshold() -> None:
    assert spike(9.0, None, None, 0.25, 0.5) == NOT_EVALUATED
    assert spike(9.0, 7.0, None, 0.25, 0.5) == NOT_EVALUATED
    assert spike(9.0, 7.0, 7.0, None, None) == NOT_EVALUATED
    assert spike(9.0, 7.0, 7.0, None, 0.5) == FAIL
    assert spike(9.0, 7.0, 7.0, 0.5, None) == SUSPECT


# --- rate of change ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "flag"),
    [
        (7.5, PASS),  # step 0.5 = 2 × sd: not above, passes
        (6.5, PASS),
        (7.75, SUSPECT),
        (6.25, SUSPECT),
        (NAN, MISSING),
    ],
)
def test_rate_of_change_boundaries(value: float, flag: int) -> None:
    assert rate_of_change(value, 7.0, 0.25, 2.0) == flag


def test_rate_of_change_floor_and_missing_history() -> None:
    assert rate_of_change(7.5, 7.0, 0.0, 3.0, floor=0.5) == PASS  # a dead-quiet window
    assert rate_of_change(7.75, 7.0, 0.0, 3.0, floor=0.5) == SUSPECT
    assert rate_of_change(7.5, None, 0.25, 2.0) == NOT_EVALUATED
    assert rate_of_change(7.5, 7.0, None, 2.0) == NOT_EVALUATED  # window too short
    assert rate_of_change(7.5, 7.0, 0.25, None) == NOT_EVALUATED  # test disabled


# --- flat line ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "flag"),
    [
        ([], NOT_EVALUATED),
        ([7.0], NOT_EVALUATED),  # a run of 1 so far; history too short to say
        ([7.0, 7.0], SUSPECT),  # 2 = suspect count
        ([7.0, 7.125, 6.875], FAIL),  # 3 = fail count; each within 0.25 of 7.0
        ([7.0, 7.0, 7.0, 7.0, 7.0], FAIL),
        ([7.25, 7.0, 7.0], PASS),  # |7.0 − 7.25| = tolerance: not "the same"
        ([7.0, 7.25, 7.0, 7.0], PASS),  # the run breaks before the suspect count
        ([7.0, 7.0, 8.0, 7.0], SUSPECT),
    ],
)
def test_flat_line_boundaries(previous: list[float], flag: int) -> None:
    assert flat_line(7.0, previous, 2, 3, 0.25) == flag


def test_flat_line_missing_and_disabled() -> None:
    assert flat_line(NAN, [7.0] * 5, 2, 3, 0.25) == MISSING
    assert flat_line(7.0, [7.0] * 5, 2, 3, None) == NOT_EVALUATED
    assert flat_line(7.0, [7.0] * 5, None, None, 0.25) == NOT_EVALUATED
    assert flat_line(7.0, [7.0] * 5, None, 3, 0.25) == FAIL
    assert flat_line(7.0, [7.0] * 2, None, 3, 0.25) == NOT_EVALUATED


# --- aggregate ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "flag"),
    [
        ((1, 2, 2, 2), PASS),  # passing one test outranks "not evaluated" (ioos-qc)
        ((2, 2, 2, 2), NOT_EVALUATED),
        ((1, 3, 1, 2), SUSPECT),
        ((3, 4, 1, 2), FAIL),
        ((9, 9, 9, 9), MISSING),
        ((), NOT_EVALUATED),
    ],
)
def test_aggregate_is_the_worst_by_qartod_precedence(flags: tuple[int, ...], flag: int) -> None:
    assert aggregate(flags) == flag


# --- the stateful stream -----------------------------------------------------------------------

PH = QcLimits(
    units=("pH",),
    fail_span=(0.0, 14.0),
    suspect_span=(6.0, 9.0),
    spike_suspect=0.25,
    spike_fail=0.5,
    rate_of_change_sd=2.0,
    rate_of_change_window_s=3600.0,
    rate_of_change_min_samples=3,
    flat_line_suspect=3,
    flat_line_fail=5,
    flat_line_tolerance=0.01,
)


def run(stream: Stream, values: list[float], t0: int = 0, step: int = 10 * S) -> list[tuple]:
    return [stream.check(t0 + i * step, v).tests for i, v in enumerate(values)]


def test_a_fresh_stream_fills_its_history_reading_by_reading() -> None:
    s = Stream(PH)
    flags = run(s, [7.0, 7.5, 7.0, 7.5])
    #                 gross  spike  roc   flat
    assert flags == [
        (PASS, NOT_EVALUATED, NOT_EVALUATED, NOT_EVALUATED),
        (PASS, NOT_EVALUATED, NOT_EVALUATED, PASS),
        (PASS, PASS, NOT_EVALUATED, PASS),  # |7.0 − 7.25| = 0.25: not above
        # window [7.0, 7.5, 7.0]: sd = 0.2887, 2 sd = 0.577 > step 0.5
        (PASS, PASS, PASS, PASS),
    ]


def test_a_stuck_sensor_goes_suspect_then_fail() -> None:
    s = Stream(PH)
    flags = [t[3] for t in run(s, [7.2] * 7)]
    assert flags == [NOT_EVALUATED, NOT_EVALUATED, NOT_EVALUATED, SUSPECT, SUSPECT, FAIL, FAIL]


def test_a_spike_is_flagged_and_kept_and_the_river_recovers() -> None:
    s = Stream(PH)
    tests = run(s, [7.0, 7.0, 7.0, 7.0, 8.0, 7.0, 7.0, 7.0])
    # The two readings after it are compared with a mean that holds it: half its height.
    assert [t[1] for t in tests] == [2, 2, 1, 1, FAIL, SUSPECT, SUSPECT, 1]
    assert tests[4][2] == SUSPECT  # a step of 1.0 in a window with sd 0 (no floor)


def test_a_gross_range_failure_is_flagged_but_stays_out_of_the_history() -> None:
    s = Stream(PH)
    run(s, [7.0, 7.0])
    r = s.check(100 * S, -1.0)  # a sentinel value, impossible for pH
    assert r.tests[0] == FAIL and r.flag == FAIL
    r = s.check(110 * S, 7.0)
    assert r.tests[1] == PASS  # compared with 7.0, 7.0, not with the sentinel
    assert list(s.recent) == [7.0, 7.0, 7.0]


def test_missing_values_are_nine_everywhere_and_leave_no_trace() -> None:
    s = Stream(PH)
    run(s, [7.0, 7.0])
    for bad in (NAN, INF, -INF):
        r = s.check(50 * S, bad)
        assert (r.flag, r.tests) == (MISSING, (MISSING,) * 4)
    assert list(s.recent) == [7.0, 7.0]


def test_history_older_than_the_window_is_forgotten() -> None:
    s = Stream(PH)
    run(s, [7.0, 7.0, 7.0, 7.0])
    # An hour and a second later, nothing of the old window is left: like a restart.
    r = s.check(3 * 10 * S + 3601 * S, 7.0)
    assert r.tests == (PASS, NOT_EVALUATED, NOT_EVALUATED, NOT_EVALUATED)


def test_a_new_stream_after_restart_starts_from_nothing() -> None:
    a, b = Stream(PH), Stream(PH)
    run(a, [7.0, 7.1, 7.2, 7.3])
    assert a.check(100 * S, 7.35).tests[1:3] == (PASS, PASS)
    assert b.check(100 * S, 7.35).tests[1:3] == (NOT_EVALUATED, NOT_EVALUATED)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(
            # Exact repeats (a stuck sensor) exercise the stream's flat-line shortcut.
            st.floats(-1.0, 16.0) | st.sampled_from([7.0, 7.02, 15.0]) | st.just(NAN),
            st.sampled_from([0, 1, 10, 60, 700]),
        ),
        min_size=1,
        max_size=60,
    ),
)
def test_the_stream_agrees_with_the_pure_tests_on_a_naive_history(
    series: list[tuple[float, int]],
) -> None:
    """The stream's bookkeeping (running sums, expiry, history) against a plain model."""
    q = QcLimits(
        fail_span=(0.0, 14.0),
        suspect_span=(6.0, 9.0),
        spike_suspect=0.3,
        spike_fail=0.8,
        rate_of_change_sd=2.0,
        rate_of_change_window_s=1800.0,
        rate_of_change_min_samples=4,
        rate_of_change_floor=0.01,
        flat_line_suspect=3,
        flat_line_fail=5,
        flat_line_tolerance=0.05,
    )
    s = Stream(q)
    t = 0
    window: list[tuple[int, float]] = []  # accepted values within the window
    recent: list[float] = []  # accepted values, newest last
    for v, dt_s in series:
        t += dt_s * S
        got = s.check(t, v).tests
        if math.isnan(v):
            assert got == (MISSING,) * 4
            continue
        kept = [(wt, wv) for wt, wv in window if wt >= t - 1800 * S]
        if not kept:
            recent = []
        window = kept
        prev1 = recent[-1] if recent else None
        prev2 = recent[-2] if len(recent) >= 2 else None
        sd = statistics.stdev(w for _, w in window) if len(window) >= 4 else None
        want = (
            gross_range(v, q.fail_span, q.suspect_span),
            spike(v, prev1, prev2, q.spike_suspect, q.spike_fail),
            rate_of_change(v, prev1, sd, q.rate_of_change_sd, q.rate_of_change_floor),
            flat_line(v, recent[::-1][:5], 3, 5, 0.05),
        )
        assert got[:2] == want[:2]
        assert got[3] == want[3]
        if sd is not None and prev1 is not None:
            # at the threshold itself the running sums and stdev may round apart
            if abs(abs(v - prev1) - max(2.0 * sd, 0.01)) > 1e-9:
                assert got[2] == want[2], (v, prev1, sd)
        else:
            assert got[2] == want[2]
        if want[0] != FAIL:
            window.append((t, v))
            recent.append(v)


# --- the engine --------------------------------------------------------------------------------


def test_engine_uses_units_overrides_and_counts() -> None:
    cfg = QcConfig(
        sensors={"ph-2": {"ph": QcLimits(units=("pH",), suspect_span=(6.5, 8.5))}},
    )
    qc = QcEngine(cfg)
    assert qc.check("ph-1", "ph", "pH", 0, 8.75).tests[0] == PASS
    assert qc.check("ph-2", "ph", "pH", 0, 8.75).tests[0] == SUSPECT  # its own span
    assert qc.check("t-1", "temperature", "Cel", 0, 60.0).flag == FAIL
    assert qc.check("t-1", "temperature", "cel", 0, 12.0).tests[0] == PASS  # case-insensitive
    # limits written in Cel say nothing about Fahrenheit
    assert qc.check("t-2", "temperature", "[degF]", 0, 60.0).tests == (NOT_EVALUATED,) * 4
    # an unknown quantity gets the generic limits: only rate of change can run
    assert qc.check("x", "chlorophyll", "ug/l", 0, 3.0).tests[0] == NOT_EVALUATED
    qc.count("ph-1", PASS)
    qc.count("ph-1", PASS)
    qc.count("ph-1", FAIL)
    assert qc.flag_counts()["ph-1"] == {"1": 2, "4": 1}


def test_engine_forgets_a_sensors_history() -> None:
    qc = QcEngine()
    for i in range(3):
        qc.check("ph-1", "ph", "pH", i * S, 7.0)
    assert qc.check("ph-1", "ph", "pH", 3 * S, 7.0).tests[1] == PASS
    qc.forget(["ph-1"])
    assert qc.check("ph-1", "ph", "pH", 4 * S, 7.0).tests[1] == NOT_EVALUATED


def test_every_default_quantity_passes_a_typical_river_value() -> None:
    typical = {
        "temperature": 12.0,
        "ph": 7.4,
        "do": 9.5,
        "do_sat": 95.0,
        "ec": 350.0,
        "conductivity": 350.0,
        "orp": 250.0,
        "turbidity": 8.0,
        "depth": 1.2,
    }
    assert set(typical) == set(DEFAULT_LIMITS)
    qc = QcEngine()
    for q, v in typical.items():
        unit = DEFAULT_LIMITS[q].units[0]
        assert qc.check("s", q, unit, 0, v).flag == PASS, q


# --- fuzzing -----------------------------------------------------------------------------------

spans = st.tuples(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6)).map(lambda p: (min(p), max(p)))
limits = st.builds(
    QcLimits,
    fail_span=st.none() | spans,
    suspect_span=st.none() | spans,
    spike_suspect=st.none() | st.floats(1e-9, 1e6),
    spike_fail=st.none() | st.floats(1e-9, 1e6),
    rate_of_change_sd=st.none() | st.floats(1e-3, 10),
    rate_of_change_window_s=st.floats(1, 1e5),
    rate_of_change_min_samples=st.integers(2, 20),
    rate_of_change_floor=st.floats(0, 1e3),
    flat_line_suspect=st.none() | st.integers(1, 30),
    flat_line_fail=st.none() | st.integers(1, 30),
    flat_line_tolerance=st.none() | st.floats(1e-9, 1e3),
)


@settings(max_examples=300, deadline=None)
@given(
    limits,
    st.lists(
        st.tuples(st.floats(allow_nan=True, allow_infinity=True), st.integers(0, 10**13)),
        max_size=80,
    ),
)
def test_arbitrary_series_never_raise_and_give_only_qartod_flags(
    q: QcLimits, series: list[tuple[float, int]]
) -> None:
    s = Stream(q)
    t = 0
    for v, dt in series:
        t += dt
        r = s.check(t, v)
        assert r.flag in FLAGS
        assert set(r.tests) <= FLAGS
        assert r.flag == aggregate(r.tests)
        assert QC_TESTS == ("gross_range", "spike", "rate_of_change", "flat_line")
        assert r.record == {"flag": r.flag, "tests": "".join(str(f) for f in r.tests)}
        if not math.isfinite(v):
            assert r.flag == MISSING
