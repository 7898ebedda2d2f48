import dataclasses
import math

import pytest

from simulators.river import RiverModel, RiverState, do_saturation

DAY0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a midnight in UTC


@pytest.mark.parametrize(
    ("temp_c", "expected"),
    [(0, 14.6), (5, 12.8), (10, 11.3), (15, 10.1), (20, 9.09), (25, 8.26), (30, 7.56)],
)
def test_do_saturation_matches_en25814_table(temp_c: float, expected: float) -> None:
    assert do_saturation(temp_c) == pytest.approx(expected, abs=0.05)


def test_same_seed_and_time_give_same_sample_regardless_of_order() -> None:
    times = [DAY0 + k * 997.3 for k in range(50)]
    forward = [RiverModel(seed=7).sample(t) for t in times]
    model = RiverModel(seed=7)
    backward = [model.sample(t) for t in reversed(times)]
    assert forward == list(reversed(backward))
    assert RiverModel(seed=7).sample(times[3]) == forward[3]


def test_different_seeds_differ() -> None:
    assert RiverModel(seed=1).sample(DAY0) != RiverModel(seed=2).sample(DAY0)


def test_noise_is_constant_within_a_second() -> None:
    model = RiverModel(seed=3, t_amp=0.0, photosynthesis=0.0, ph_amp=0.0, ec_swing=0.0)
    assert model.sample(DAY0 + 10.1) == model.sample(DAY0 + 10.4)


def test_temperature_peaks_mid_afternoon_and_bottoms_before_dawn() -> None:
    model = RiverModel(seed=0, t_mean=14.0, t_amp=2.0)
    temps = {h: model.sample(DAY0 + h * 3600).temperature_c for h in range(24)}
    assert max(temps, key=temps.__getitem__) in (14, 15, 16)
    assert min(temps, key=temps.__getitem__) in (2, 3, 4)
    assert temps[15] == pytest.approx(16.0, abs=0.1)
    assert temps[3] == pytest.approx(12.0, abs=0.1)


def test_oxygen_and_ph_swing_together_with_daylight() -> None:
    model = RiverModel(seed=0)
    afternoon = model.sample(DAY0 + 14 * 3600)
    night = model.sample(DAY0 + 2 * 3600)
    assert afternoon.do_sat_pct > 105 > 95 > night.do_sat_pct
    assert afternoon.ph == pytest.approx(7.9, abs=0.05)
    assert night.ph == pytest.approx(7.3, abs=0.05)
    assert afternoon.orp_mv < night.orp_mv


def test_do_percent_is_consistent_with_mg_per_litre() -> None:
    state = RiverModel(seed=5).sample(DAY0 + 40_000)
    expected = 100 * state.do_mg_l / do_saturation(state.temperature_c)
    assert state.do_sat_pct == pytest.approx(expected)


def test_values_stay_in_plausible_ranges_over_a_week() -> None:
    model = RiverModel(seed=11)
    for k in range(0, 7 * 86_400, 617):
        s = model.sample(DAY0 + k)
        assert 10 < s.temperature_c < 18
        assert 6 < s.do_mg_l < 13
        assert 7.2 < s.ph < 8.0
        assert 320 < s.ec_us_cm < 380
        assert 200 < s.orp_mv < 300
        assert 3 < s.turbidity_ntu < 8


def test_utc_offset_shifts_the_day() -> None:
    local = RiverModel(seed=0, utc_offset_h=2.0).sample(DAY0 + 13 * 3600)
    utc = RiverModel(seed=0).sample(DAY0 + 15 * 3600)
    assert local.temperature_c == pytest.approx(utc.temperature_c, abs=0.2)


def test_state_and_model_are_frozen() -> None:
    state = RiverModel().sample(DAY0)
    assert isinstance(state, RiverState)
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.ph = 1.0  # type: ignore[misc]
    assert all(math.isfinite(v) for v in dataclasses.astuple(state))
