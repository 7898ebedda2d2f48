"""The river model's storms, oxygen cycle, ranges and probe drift (sensor-protocols §8).

The basic diurnal shapes and `do_saturation` are covered in test_sim_river.py.
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Any

import pytest

from simulators.river import Probe, RiverModel, RiverState, Storm, do_saturation

DAY0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a midnight in UTC
HOUR = 3_600.0
DAY = 86_400.0
STORM_AT = DAY0 + 10 * HOUR


QUIET = RiverModel(
    seed=1,
    t_noise=0.0,
    do_noise=0.0,
    ph_noise=0.0,
    ec_noise=0.0,
    ec_swing=0.0,
    orp_noise=0.0,
    turbidity_noise=0.0,
)


def quiet(**changes: Any) -> RiverModel:
    """A river without noise or the slow EC drift, so storm shapes are exact."""
    return dataclasses.replace(QUIET, **changes)


# -- determinism -----------------------------------------------------------------------


def test_samples_with_random_storms_and_probes_do_not_depend_on_call_order() -> None:
    times = [DAY0 + k * 3_913.7 for k in range(200)]  # 9 days
    shuffled = times[:]
    random.Random(5).shuffle(shuffled)

    def probe() -> Probe:
        return Probe(RiverModel(seed=9, storms_per_week=3), "ph-1", deployed_at=DAY0)

    forward = {t: probe().sample(t) for t in times}
    one = probe()
    assert {t: one.sample(t) for t in shuffled} == forward
    assert RiverModel(seed=9, storms_per_week=3).storms_between(DAY0, DAY0 + 9 * DAY) == (
        RiverModel(seed=9, storms_per_week=3).storms_between(DAY0, DAY0 + 9 * DAY)
    )


def test_random_storms_depend_on_the_seed_and_follow_the_rate() -> None:
    span = (DAY0, DAY0 + 350 * DAY)
    a = RiverModel(seed=1, storms_per_week=2).storms_between(*span)
    b = RiverModel(seed=2, storms_per_week=2).storms_between(*span)
    assert a != b
    assert 70 <= len(a) <= 130  # 100 expected; binomial(350, 2/7) has sd ~8.5
    assert all(0.4 <= s.intensity <= 1.0 for s in a)
    assert [s.start for s in a] == sorted(s.start for s in a)
    assert RiverModel(seed=1).storms_between(*span) == []  # off by default


def test_listed_storms_are_kept_and_validated() -> None:
    storm = Storm(STORM_AT, 0.5)
    model = RiverModel(storms=(storm,))
    assert model.storms_between(STORM_AT, STORM_AT + 1) == [storm]
    assert model.storms_between(STORM_AT + 1, STORM_AT + 2) == []
    with pytest.raises(ValueError, match="intensity"):
        Storm(STORM_AT, 1.5)
    with pytest.raises(ValueError, match="storms_per_week"):
        RiverModel(storms_per_week=-1)


# -- ranges (§8.1) ---------------------------------------------------------------------


def test_a_stormy_month_stays_within_the_reference_ranges() -> None:
    model = RiverModel(seed=4, storms_per_week=2)
    storms = model.storms_between(DAY0 - 7 * DAY, DAY0 + 30 * DAY)
    assert len(storms) >= 4
    peak_turbidity = 0.0
    for k in range(0, 30 * 86_400, 900):
        t = DAY0 + k
        s = model.sample(t)
        assert 0 < s.temperature_c < 28
        assert 6.5 < s.ph < 8.5
        assert 6 < s.do_mg_l < 14
        assert 75 < s.do_sat_pct < 150
        assert 40 < s.ec_us_cm < 3500
        assert 100 < s.orp_mv < 400
        assert 1 < s.turbidity_ntu < 1500
        assert 0.01 <= s.nh4_mg_l <= 1
        assert 0.5 < s.chlorophyll_ug_l < 50
        assert s.depth_m >= 0.8 * 0.99 and s.discharge_m3_s >= 2.0 * 0.99
        peak_turbidity = max(peak_turbidity, s.turbidity_ntu)
        if not model.storms_between(t - 3 * DAY, t + 1):  # baseflow
            assert 1 < s.turbidity_ntu < 20
    assert peak_turbidity > 100  # floods reach 100-1000+ NTU


# -- storms (§8.4) ---------------------------------------------------------------------


def test_a_storm_flushes_dilutes_and_recovers_conductivity() -> None:
    model = quiet(storms=(Storm(STORM_AT, 1.0),))
    before = model.sample(STORM_AT - 60).ec_us_cm
    assert before == pytest.approx(350.0)
    hours = [h / 4 for h in range(4 * 24 * 5)]
    ec = {h: model.sample(STORM_AT + h * HOUR).ec_us_cm for h in hours}
    first_hour = [ec[h] for h in hours if h <= 1]
    flush_peak = max(first_hour)
    low_h = min(ec, key=ec.__getitem__)
    assert flush_peak > before * 1.05  # the initial solute flush
    assert max(hours[: hours.index(low_h)], key=ec.__getitem__) <= 1  # flush before the dip
    assert 0.4 * before <= ec[low_h] <= 0.8 * before  # a 20-60 % dip
    assert 2 < low_h < 12
    recovery = [ec[h] for h in hours if h >= low_h]
    assert recovery == sorted(recovery)  # recovers monotonically
    assert ec[hours[-1]] == pytest.approx(before, rel=0.05)


def test_storm_turbidity_spikes_on_the_rising_limb() -> None:
    model = quiet(storms=(Storm(STORM_AT, 1.0),))
    base = model.sample(STORM_AT - 60)
    samples = {h / 10: model.sample(STORM_AT + h / 10 * HOUR) for h in range(480)}
    turbidity_peak = max(samples, key=lambda h: samples[h].turbidity_ntu)
    flow_peak = max(samples, key=lambda h: samples[h].discharge_m3_s)
    assert turbidity_peak < flow_peak  # clockwise hysteresis: sediment runs out first
    assert samples[turbidity_peak].turbidity_ntu > 20 * base.turbidity_ntu
    assert samples[flow_peak].depth_m > 2 * base.depth_m
    assert samples[47.9].turbidity_ntu == pytest.approx(base.turbidity_ntu, rel=0.1)
    # On equal discharge, the rising limb is more turbid than the falling one.
    rising = samples[1.0]
    falling = min(
        (s for h, s in samples.items() if h > flow_peak),
        key=lambda s: abs(s.discharge_m3_s - rising.discharge_m3_s),
    )
    assert rising.turbidity_ntu > 2 * falling.turbidity_ntu


def test_storm_effects_scale_with_intensity() -> None:
    weak = quiet(storms=(Storm(STORM_AT, 0.4),)).sample(STORM_AT + 5 * HOUR)
    strong = quiet(storms=(Storm(STORM_AT, 1.0),)).sample(STORM_AT + 5 * HOUR)
    calm = quiet().sample(STORM_AT + 5 * HOUR)
    assert calm.ec_us_cm > weak.ec_us_cm > strong.ec_us_cm
    assert calm.turbidity_ntu < weak.turbidity_ntu < strong.turbidity_ntu
    assert strong.temperature_c < calm.temperature_c  # toward the cooler rain
    assert strong.nh4_mg_l > calm.nh4_mg_l


# -- oxygen (§8.2, §8.3) ---------------------------------------------------------------


def test_do_equals_saturation_without_biology() -> None:
    model = quiet(photosynthesis=0.0, respiration=0.0)
    for h in range(48, 5):
        s = model.sample(DAY0 + h * HOUR)
        assert s.do_mg_l == pytest.approx(do_saturation(s.temperature_c))
        assert s.do_sat_pct == pytest.approx(100.0)


def test_do_follows_the_daily_photosynthesis_cycle() -> None:
    model = quiet()
    day = {q / 4: model.sample(DAY0 + q / 4 * HOUR) for q in range(96)}
    ratio = {h: s.do_mg_l / do_saturation(s.temperature_c) for h, s in day.items()}
    peak = max(ratio, key=ratio.__getitem__)
    low = min(ratio, key=ratio.__getitem__)
    assert 13 <= peak <= 16  # afternoon peak
    assert 4 <= low <= 7  # near dawn
    assert ratio[peak] == pytest.approx(1 + 0.25 - 0.10, abs=0.01)
    assert ratio[low] == pytest.approx(1 - 0.10, abs=0.01)
    # pH moves with oxygen, ORP against it.
    assert max(day, key=lambda h: day[h].ph) == peak
    assert min(day, key=lambda h: day[h].orp_mv) == peak


def test_do_tracks_saturation_when_the_water_warms() -> None:
    cold = quiet(t_mean=4.0, t_amp=0.0).sample(DAY0 + 14 * HOUR)
    warm = quiet(t_mean=24.0, t_amp=0.0).sample(DAY0 + 14 * HOUR)
    assert cold.do_mg_l / warm.do_mg_l == pytest.approx(do_saturation(4.0) / do_saturation(24.0))
    assert cold.do_sat_pct == pytest.approx(warm.do_sat_pct)


# -- probes (§8.5) ---------------------------------------------------------------------


def test_a_probe_reads_the_truth_when_deployed_and_drifts_linearly() -> None:
    river = quiet()
    probe = Probe(river, "ph-1", deployed_at=DAY0, fouling_max=0.0)
    assert probe.sample(DAY0) == river.sample(DAY0)
    assert probe.sample(DAY0 - DAY) == river.sample(DAY0 - DAY)
    offsets = [probe.sample(DAY0 + d * DAY).ph - river.sample(DAY0 + d * DAY).ph for d in (10, 20)]
    assert offsets[0] != 0
    assert offsets[1] == pytest.approx(2 * offsets[0])
    assert offsets[0] == pytest.approx(10 * probe.drift_rate("ph"))


def test_probes_drift_differently_but_within_swap_out_tolerance_after_a_month() -> None:
    river = quiet()
    t = DAY0 + 30 * DAY
    true = river.sample(t)
    readings = [
        Probe(river, f"p{k}", deployed_at=DAY0, fouling_max=0.0).sample(t) for k in range(8)
    ]
    assert len({r.ph for r in readings}) == 8
    for r in readings:
        assert abs(r.temperature_c - true.temperature_c) <= 0.3
        assert abs(r.ph - true.ph) <= 0.5
        assert abs(r.ec_us_cm / true.ec_us_cm - 1) <= 0.15
        assert abs(r.do_mg_l - true.do_mg_l) <= 0.5


def test_fouling_grows_after_a_lag_and_cleaning_removes_it_in_one_step() -> None:
    river = quiet()
    probe = Probe(river, "do-1", deployed_at=DAY0, drift_scale=0.0, clean_every_days=30)
    assert probe.fouling(DAY0 + 4.9 * DAY) == 0.0  # the lag is at least 5 days
    week = [probe.fouling(DAY0 + d * DAY) for d in range(15, 30)]
    assert week == sorted(week) and week[-1] > 0.1
    assert probe.fouling(DAY0 + 30 * DAY + 60) == 0.0  # just cleaned
    t = DAY0 + 29 * DAY
    true, seen = river.sample(t), probe.sample(t)
    assert seen.do_mg_l < true.do_mg_l
    assert seen.ec_us_cm < true.ec_us_cm
    assert seen.turbidity_ntu > true.turbidity_ntu
    assert seen.ph == true.ph and seen.temperature_c == true.temperature_c
    assert seen.do_sat_pct == pytest.approx(100 * seen.do_mg_l / do_saturation(true.temperature_c))


def test_state_has_the_new_fields_and_is_finite() -> None:
    state = RiverModel(storms_per_week=7).sample(DAY0 + 5 * DAY)
    assert isinstance(state, RiverState)
    assert {"depth_m", "discharge_m3_s", "chlorophyll_ug_l", "nh4_mg_l"} <= {
        f.name for f in dataclasses.fields(state)
    }
    assert all(math.isfinite(v) for v in dataclasses.astuple(state))
