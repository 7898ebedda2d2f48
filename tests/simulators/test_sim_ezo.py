import pytest

from simulators.ezo import EzoCircuit, EzoKind, Faults, Reply
from simulators.river import RiverModel

NOW = 1_767_272_400.0  # 2026-01-01T13:00:00Z
RIVER = RiverModel(seed=42)
STATE = RIVER.sample(NOW)


def circuit(kind: EzoKind, **kwargs: object) -> EzoCircuit:
    return EzoCircuit(kind, RIVER, **kwargs)  # type: ignore[arg-type]


def send(c: EzoCircuit, command: str, now: float = NOW) -> list[bytes]:
    return [r.data for r in c.receive(command.encode() + b"\r", now)]


# -- exact strings, one table per concern -------------------------------------

READINGS: list[tuple[EzoKind, list[str], bytes]] = [
    ("ph", [], f"{STATE.ph:.3f}\r".encode()),
    ("orp", [], f"{STATE.orp_mv:.1f}\r".encode()),
    ("rtd", [], f"{STATE.temperature_c:.3f}\r".encode()),
    ("do", [], f"{STATE.do_mg_l:.2f}\r".encode()),
    ("do", ["O,%,1"], f"{STATE.do_mg_l:.2f},{STATE.do_sat_pct:.1f}\r".encode()),
    ("do", ["O,%,1", "O,mg,0"], f"{STATE.do_sat_pct:.1f}\r".encode()),
    ("do", ["O,mg,0"], b"no output\r"),
    ("ec", [], f"{STATE.ec_us_cm:.1f}\r".encode()),
    ("ec", ["O,SG,1"], f"{STATE.ec_us_cm:.1f},1.000\r".encode()),
    (
        "ec",
        ["o,tds,1", "O,S,1", "O,SG,1"],
        f"{STATE.ec_us_cm:.1f},{STATE.ec_us_cm / 2:.1f},0.23,1.000\r".encode(),
    ),
    ("ec", ["O,EC,0"], b"no output\r"),
]


@pytest.mark.parametrize(("kind", "setup", "reading"), READINGS)
def test_read_returns_formatted_river_value_then_ok(
    kind: EzoKind, setup: list[str], reading: bytes
) -> None:
    c = circuit(kind)
    for command in setup:
        assert send(c, command) == [b"*OK\r"]
    assert send(c, "R") == [reading, b"*OK\r"]
    assert send(c, "r") == [reading, b"*OK\r"]


def test_ec_above_1000_has_no_decimals() -> None:
    c = EzoCircuit("ec", RiverModel(seed=42, ec_mean=1413.0, ec_swing=0.0, ec_noise=0.0))
    c.receive(b"O,TDS,1\r", NOW)
    assert send(c, "R") == [b"1413,706.5\r", b"*OK\r"]


def test_old_ec_firmware_enables_every_output() -> None:
    c = circuit("ec", firmware="2.09")
    assert send(c, "O,?") == [b"?,O,EC,TDS,S,SG\r", b"*OK\r"]


IDENTITY: list[tuple[EzoKind, bool, str, bytes]] = [
    ("ph", False, "i", b"?I,pH,2.16\r"),
    ("ph", True, "I", b"?I,PH,2.16\r"),
    ("do", False, "i", b"?I,DO,2.16\r"),
    ("ec", False, "i", b"?I,EC,2.16\r"),
    ("orp", False, "i", b"?I,ORP,2.16\r"),
    ("rtd", False, "i", b"?I,RTD,2.16\r"),
    ("ph", False, "Status", b"?Status,P,5.038\r"),
    ("ph", True, "STATUS", b"?STATUS,P,5.038\r"),
    ("ph", False, "Cal,?", b"?Cal,0\r"),
    ("ec", True, "cal,?", b"?CAL,0\r"),
    ("ph", False, "C,?", b"?C,1\r"),
    ("ph", False, "L,?", b"?L,1\r"),
    ("ph", False, "T,?", b"?T,25.0\r"),
    ("ec", False, "T,?", b"?T,25.0\r"),
    ("do", False, "T,?", b"?T,20.0\r"),
    ("do", True, "t,?", b"?T,20.0\r"),
    ("ph", False, "Name,?", b"?Name,\r"),
    ("ph", True, "Name,?", b"?NAME,\r"),
    ("ec", False, "O,?", b"?,O,EC\r"),
    ("do", False, "O,?", b"?,O,mg\r"),
    ("do", True, "O,?", b"?,O,MG\r"),
    ("ec", False, "K,?", b"?K,1.0\r"),
]


@pytest.mark.parametrize(("kind", "upper", "command", "reply"), IDENTITY)
def test_queries(kind: EzoKind, upper: bool, command: str, reply: bytes) -> None:
    c = circuit(kind, upper_case_replies=upper)
    assert send(c, command) == [reply, b"*OK\r"]


def test_firmware_is_reported() -> None:
    assert send(circuit("ph", firmware="2.12"), "i") == [b"?I,pH,2.12\r", b"*OK\r"]


SETTINGS: list[tuple[EzoKind, list[str], str, bytes]] = [
    ("ph", ["C,0"], "C,?", b"?C,0\r"),
    ("ph", ["C,0", "C,1"], "C,?", b"?C,1\r"),
    ("ph", ["C,30"], "C,?", b"?C,30\r"),
    ("ph", ["C,99"], "c,?", b"?C,99\r"),
    ("ph", ["L,0"], "L,?", b"?L,0\r"),
    ("ph", ["T,19.5"], "T,?", b"?T,19.5\r"),
    ("ec", ["T,19.50"], "T,?", b"?T,19.5\r"),
    ("do", ["T,22.45"], "T,?", b"?T,22.45\r"),
    ("ph", ["Name,TANK-A"], "Name,?", b"?Name,TANK-A\r"),
    ("ph", ["name,tank-a"], "NAME,?", b"?Name,tank-a\r"),
    ("ph", ["Name,X", "Name,"], "Name,?", b"?Name,\r"),
    ("ec", ["O,TDS,1"], "O,?", b"?,O,EC,TDS\r"),
    ("ec", ["O,SG,1", "O,S,1", "O,TDS,1"], "O,?", b"?,O,EC,TDS,S,SG\r"),
    ("ec", ["O,EC,0"], "O,?", b"?,O,\r"),
    ("do", ["O,%,1"], "O,?", b"?,O,mg,%\r"),
    ("do", ["O,%,1", "O,mg,0"], "O,?", b"?,O,%\r"),
    ("ec", ["K,0.1"], "K,?", b"?K,0.1\r"),
    ("ph", ["Cal,mid,7.00"], "Cal,?", b"?Cal,1\r"),
    ("ph", ["Cal,mid,7.00", "Cal,low,4.00"], "Cal,?", b"?Cal,2\r"),
    ("ph", ["Cal,mid,7.00", "Cal,low,4.00", "Cal,high,10.00"], "Cal,?", b"?Cal,3\r"),
    ("ph", ["Cal,mid,7", "Cal,low,4", "Cal,mid,7"], "Cal,?", b"?Cal,1\r"),
    ("ph", ["Cal,mid,7", "Cal,clear"], "Cal,?", b"?Cal,0\r"),
    ("orp", ["Cal,225"], "Cal,?", b"?Cal,1\r"),
    ("ec", ["Cal,dry", "Cal,1413"], "Cal,?", b"?Cal,1\r"),
    ("ec", ["Cal,dry", "Cal,low,12880", "Cal,high,80000"], "Cal,?", b"?Cal,2\r"),
    ("do", ["Cal"], "Cal,?", b"?Cal,1\r"),
    ("do", ["Cal", "Cal,0"], "Cal,?", b"?Cal,2\r"),
    ("rtd", ["Cal,100.0"], "Cal,?", b"?Cal,1\r"),
    ("ph", ["Find"], "L,?", b"?L,1\r"),
]


@pytest.mark.parametrize(("kind", "setup", "query", "reply"), SETTINGS)
def test_settings_round_trip(kind: EzoKind, setup: list[str], query: str, reply: bytes) -> None:
    c = circuit(kind)
    for command in setup:
        assert send(c, command) == [b"*OK\r"], command
    assert send(c, query) == [reply, b"*OK\r"]


ERRORS: list[tuple[EzoKind, str]] = [
    ("ph", "K,1.0"),
    ("ph", "K,?"),
    ("ph", "FOO"),
    ("ph", "R,1"),
    ("ph", "C,100"),
    ("ph", "C,-1"),
    ("ph", "C,x"),
    ("ph", "*OK,2"),
    ("ph", "T,warm"),
    ("ph", "T,nan"),
    ("orp", "T,20"),
    ("orp", "T,?"),
    ("rtd", "T,20"),
    ("orp", "RT,20"),
    ("ph", "RT,abc"),
    ("ph", "O,EC,1"),
    ("ec", "O,DO,1"),
    ("ec", "O,EC,2"),
    ("do", "O,TDS,1"),
    ("ph", "Name,this-name-is-far-too-long"),
    ("ph", "Name,two words"),
    ("ph", "L,2"),
    ("ph", "Cal,7.00"),
    ("ph", "Cal,middle,7"),
    ("ph", "Cal,mid,x"),
    ("ph", "Cal"),
    ("do", "Cal,1"),
    ("orp", "Cal,low,100"),
    ("ph", "i,1"),
    ("ph", "Sleep,1"),
    ("ph", "\xffR"),
]


@pytest.mark.parametrize(("kind", "command"), ERRORS)
def test_bad_commands_answer_er(kind: EzoKind, command: str) -> None:
    c = circuit(kind)
    assert [r.data for r in c.receive(command.encode("latin-1") + b"\r", NOW)] == [b"*ER\r"]


# -- protocol behaviour ------------------------------------------------------


def test_power_up_emits_re_and_starts_in_continuous_mode() -> None:
    c = circuit("ph")
    assert c.power_up(NOW) == [Reply(0.0, b"*RE\r")]
    assert c.continuous_interval == 1.0
    assert c.continuous_output(NOW) == f"{STATE.ph:.3f}\r".encode()


def test_continuous_mode_off_and_interval() -> None:
    c = circuit("ec")
    send(c, "C,0")
    intervals = [c.continuous_interval]
    assert c.continuous_output(NOW) is None
    send(c, "C,5")
    intervals.append(c.continuous_interval)
    assert intervals == [None, 5.0]
    assert c.continuous_output(NOW) == f"{STATE.ec_us_cm:.1f}\r".encode()


def test_response_codes_off_on_and_query() -> None:
    c = circuit("ph")
    assert send(c, "*OK,0") == []
    assert send(c, "*OK,?") == [b"?*OK,0\r"]
    assert send(c, "C,0") == []
    assert send(c, "R") == [f"{STATE.ph:.3f}\r".encode()]
    assert send(c, "i") == [b"?I,pH,2.16\r"]
    assert send(c, "bogus") == [b"*ER\r"]
    assert send(c, "*ok,1") == [b"*OK\r"]
    assert send(c, "*OK,?") == [b"?*OK,1\r"]


def test_read_with_temperature_sets_t() -> None:
    c = circuit("do")
    replies = c.receive(b"RT,18.5\r", NOW)
    assert [r.data for r in replies] == [f"{STATE.do_mg_l:.2f}\r".encode(), b"*OK\r"]
    assert replies[0].delay_s == pytest.approx(0.9)
    assert send(c, "T,?") == [b"?T,18.5\r", b"*OK\r"]


def test_do_temperature_resets_on_power_cycle_but_ph_keeps_it() -> None:
    do, ph = circuit("do"), circuit("ph")
    send(do, "T,12.3")
    send(ph, "T,12.3")
    do.power_up(NOW)
    ph.power_up(NOW)
    assert send(do, "T,?") == [b"?T,20.0\r", b"*OK\r"]
    assert send(ph, "T,?") == [b"?T,12.3\r", b"*OK\r"]


def test_sleep_and_wake() -> None:
    c = circuit("ph")
    assert send(c, "Sleep") == [b"*SL\r"]
    assert c.continuous_output(NOW) is None
    # The byte that wakes the circuit is consumed; the rest is processed.
    assert [r.data for r in c.receive(b"xi\r", NOW)] == [b"*WA\r", b"?I,pH,2.16\r", b"*OK\r"]
    assert c.continuous_output(NOW) is not None


def test_factory_reset_restores_defaults() -> None:
    c = circuit("ec", name="RIVER")
    for command in ["C,0", "*OK,0", "O,TDS,1", "Name,X", "L,0", "Cal,1413"]:
        send(c, command)
    assert send(c, "Factory") == [b"*RS\r", b"*RE\r"]  # codes were off: no *OK
    assert send(c, "O,?") == [b"?,O,EC\r", b"*OK\r"]
    assert send(c, "C,?") == [b"?C,1\r", b"*OK\r"]
    assert send(c, "Name,?") == [b"?Name,RIVER\r", b"*OK\r"]
    assert send(c, "Cal,?") == [b"?Cal,0\r", b"*OK\r"]
    assert send(c, "Status") == [b"?Status,S,5.038\r", b"*OK\r"]
    assert send(c, "Factory") == [b"*OK\r", b"*RS\r", b"*RE\r"]


def test_partial_input_is_buffered_until_cr() -> None:
    c = circuit("ph")
    assert c.receive(b"St", NOW) == []
    assert c.receive(b"atu", NOW) == []
    assert [r.data for r in c.receive(b"s\r\ni\r", NOW)] == [
        b"?Status,P,5.038\r",
        b"*OK\r",
        b"?I,pH,2.16\r",
        b"*OK\r",
    ]


def test_bare_cr_is_ignored_and_overlong_input_is_rejected() -> None:
    c = circuit("ph")
    assert c.receive(b"\r\r", NOW) == []
    assert [r.data for r in c.receive(b"x" * 65, NOW)] == [b"*ER\r"]
    assert send(c, "i") == [b"?I,pH,2.16\r", b"*OK\r"]


@pytest.mark.parametrize(
    ("kind", "read_s", "read_temp_s", "cal_s"),
    [
        ("ph", 0.9, 0.9, 0.9),
        ("orp", 1.0, None, 0.9),
        ("ec", 0.6, 0.9, 1.2),
        ("do", 0.6, 0.9, 1.3),
        ("rtd", 1.0, None, 0.6),
    ],
)
def test_processing_delays_follow_the_reference_table(
    kind: EzoKind, read_s: float, read_temp_s: float | None, cal_s: float
) -> None:
    scale = 0.5
    c = circuit(kind, delay_scale=scale)
    read = c.receive(b"R\r", NOW)
    assert read[0].delay_s == pytest.approx(read_s * scale)
    assert read[1].delay_s == 0.0
    assert c.receive(b"i\r", NOW)[0].delay_s == pytest.approx(0.3 * scale)
    if read_temp_s is not None:
        assert c.receive(b"RT,20\r", NOW)[0].delay_s == pytest.approx(read_temp_s * scale)
    cal = {"ph": "Cal,mid,7", "orp": "Cal,225", "ec": "Cal,1413", "do": "Cal", "rtd": "Cal,100"}
    assert c.receive(f"{cal[kind]}\r".encode(), NOW)[0].delay_s == pytest.approx(cal_s * scale)


def test_readings_follow_the_time_given() -> None:
    c = circuit("rtd")
    later = NOW + 3 * 3600
    assert send(c, "R", later)[0] == f"{RIVER.sample(later).temperature_c:.3f}\r".encode()


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match="kind"):
        circuit("nh4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="firmware"):
        circuit("ph", firmware="two")
    with pytest.raises(ValueError, match="negative"):
        Faults(error_next=-1)


# -- fault injection ---------------------------------------------------------

PH_LINE = f"{STATE.ph:.3f}\r".encode()


def test_error_next_replaces_readings_with_er() -> None:
    c = circuit("ph", faults=Faults(error_next=2))
    assert send(c, "i") == [b"?I,pH,2.16\r", b"*OK\r"]  # only readings are affected
    assert send(c, "R") == [b"*ER\r"]
    assert send(c, "RT,20") == [b"*ER\r"]
    assert send(c, "R") == [PH_LINE, b"*OK\r"]
    assert c.faults == Faults()


def test_silent_next_drops_commands_entirely() -> None:
    c = circuit("ph")
    c.inject(silent_next=2)
    assert send(c, "C,0") == []
    assert send(c, "R") == []
    assert c.continuous_interval == 1.0  # the lost C,0 never took effect
    assert send(c, "R") == [PH_LINE, b"*OK\r"]


def test_garbage_next_precedes_replies_with_binary_noise() -> None:
    c = circuit("ph", seed=9)
    c.inject(garbage_next=2)
    first = send(c, "R")
    second = send(c, "i")
    assert first[1:] == [PH_LINE, b"*OK\r"]
    assert second[1:] == [b"?I,pH,2.16\r", b"*OK\r"]
    for garbage in (first[0], second[0]):
        assert garbage.endswith(b"\r")
        assert b"\r" not in garbage[:-1]
        assert all(b >= 0x80 for b in garbage[:-1])
        assert len(garbage) >= 4
    assert first[0] != second[0]
    assert send(c, "R") == [PH_LINE, b"*OK\r"]
    # Deterministic: the same seed produces the same garbage.
    again = circuit("ph", seed=9, faults=Faults(garbage_next=1))
    assert send(again, "R")[0] == first[0]


def test_stale_lines_are_old_continuous_readings() -> None:
    c = circuit("rtd")
    send(c, "C,10")
    c.inject(stale_lines=3)
    lines = send(c, "i")
    expected = [f"{RIVER.sample(NOW - s).temperature_c:.3f}\r".encode() for s in (30, 20, 10)]
    assert lines == [*expected, b"?I,RTD,2.16\r", b"*OK\r"]
    assert send(c, "i") == [b"?I,RTD,2.16\r", b"*OK\r"]


def test_spontaneous_reset_reboots_before_the_reply() -> None:
    c = circuit("do")
    send(c, "T,11")
    c.inject(spontaneous_reset=True)
    assert send(c, "T,?") == [b"*RS\r", b"*RE\r", b"?T,20.0\r", b"*OK\r"]
    assert send(c, "Status") == [b"?Status,W,5.038\r", b"*OK\r"]
    assert c.faults == Faults()


def test_inject_adds_to_pending_faults() -> None:
    c = circuit("ph", faults=Faults(error_next=1))
    c.inject(error_next=2, stale_lines=1)
    assert c.faults == Faults(error_next=3, stale_lines=1)


def test_faults_fire_in_order_reset_stale_garbage() -> None:
    c = circuit("ph", faults=Faults(spontaneous_reset=True, stale_lines=1, garbage_next=1))
    lines = send(c, "R")
    stale = f"{RIVER.sample(NOW - 1).ph:.3f}\r".encode()
    assert lines[:3] == [b"*RS\r", b"*RE\r", stale]
    assert lines[3][0] >= 0x80
    assert lines[4:] == [PH_LINE, b"*OK\r"]


# -- more faults, continuous output, compensation -------------------------------------


def test_truncated_reading_loses_its_cr_and_runs_into_the_ok() -> None:
    c = circuit("ph", seed=3)
    full = f"{STATE.ph:.3f}"
    c.inject(truncate_next=1)
    replies = c.receive(b"R\r", NOW)
    assert len(replies) == 2
    fragment = replies[0].data
    assert not fragment.endswith(b"\r")
    assert full.encode().startswith(fragment) and fragment != full.encode()
    assert replies[1].data == b"*OK\r"
    assert send(c, "R") == [f"{full}\r".encode(), b"*OK\r"]  # one reading only


def test_stuck_repeats_the_previous_reading() -> None:
    c = circuit("rtd")
    first = send(c, "R", NOW)
    c.inject(stuck_next=2)
    later = NOW + 3600
    assert send(c, "R", later) == first
    assert send(c, "R", later) == first
    assert send(c, "R", later) == [f"{RIVER.sample(later).temperature_c:.3f}\r".encode(), b"*OK\r"]


def test_spike_moves_the_value_far_for_one_reading() -> None:
    c = circuit("orp", seed=1)
    c.inject(spike_next=1)
    spiked = float(send(c, "R")[0])
    assert abs(spiked - STATE.orp_mv) == pytest.approx(300.0, abs=0.1)
    assert send(c, "R")[0] == f"{STATE.orp_mv:.1f}\r".encode()


def test_slow_replies_come_late_once() -> None:
    c = circuit("ph", delay_scale=0.0)
    c.inject(slow_next=1, slow_s=4.5)
    assert c.receive(b"R\r", NOW)[0].delay_s == pytest.approx(4.5)
    assert c.receive(b"R\r", NOW)[0].delay_s == 0.0


def test_undervoltage_line_precedes_the_answer() -> None:
    c = circuit("ph")
    c.inject(undervoltage_next=1)
    assert send(c, "R") == [b"*UV\r", f"{STATE.ph:.3f}\r".encode(), b"*OK\r"]
    assert send(c, "i") == [b"?I,pH,2.16\r", b"*OK\r"]


def test_dropout_loses_commands_and_continuous_lines_for_its_duration() -> None:
    c = circuit("ph")
    c.drop_out(NOW + 10, 5)
    assert c.continuous_output(NOW + 9) is not None
    assert c.continuous_output(NOW + 12) is None
    assert send(c, "R", NOW + 14.9) == []
    assert send(c, "R", NOW + 15) == [f"{RIVER.sample(NOW + 15).ph:.3f}\r".encode(), b"*OK\r"]
    with pytest.raises(ValueError, match="duration"):
        c.drop_out(NOW, 0)


def test_continuous_output_carries_faults() -> None:
    c = circuit("ec", seed=2)
    c.inject(garbage_next=1, undervoltage_next=1, truncate_next=1)
    line = c.continuous_output(NOW)
    assert line is not None
    assert line.startswith(b"*UV\r")
    garbage, fragment = line[4:].split(b"\r")
    assert garbage and all(b >= 0x80 for b in garbage)
    assert fragment and f"{STATE.ec_us_cm:.1f}".encode().startswith(fragment)
    assert c.continuous_output(NOW) == f"{STATE.ec_us_cm:.1f}\r".encode()


@pytest.mark.parametrize(
    ("scale", "value"),
    [
        ("c", STATE.temperature_c),
        ("k", STATE.temperature_c + 273.15),
        ("f", STATE.temperature_c * 9 / 5 + 32),
    ],
)
def test_rtd_scale(scale: str, value: float) -> None:
    c = circuit("rtd", upper_case_replies=True)
    assert send(c, f"S,{scale.upper()}") == [b"*OK\r"]
    assert send(c, "S,?") == [f"?S,{scale}\r".encode(), b"*OK\r"]
    assert send(c, "R") == [f"{value:.3f}\r".encode(), b"*OK\r"]
    assert send(circuit("ph"), "S,?") == [b"*ER\r"]
    assert send(c, "S,x") == [b"*ER\r"]


def test_output_query_without_comma() -> None:
    c = circuit("do", output_query_comma=False)
    send(c, "O,%,1")
    assert send(c, "O,?") == [b"?O,mg,%\r", b"*OK\r"]


def test_model_compensation_is_exact_at_the_water_temperature_and_off_elsewhere() -> None:
    water = f"{STATE.temperature_c:.6f}"
    cases: list[tuple[EzoKind, str]] = [("ph", f"{STATE.ph:.3f}"), ("ec", f"{STATE.ec_us_cm:.1f}")]
    for kind, true in cases:
        c = circuit(kind, model_compensation=True)
        default = send(c, "R")[0]  # compensated at 25 °C: off
        send(c, f"T,{water}")
        assert send(c, "R")[0] == f"{true}\r".encode()
        assert default != f"{true}\r".encode()
    do = circuit("do", model_compensation=True)
    send(do, "O,%,1")
    cold = float(send(do, "R")[0].split(b",")[0])  # at the default 20 °C
    send(do, f"T,{water}")
    assert send(do, "R")[0] == f"{STATE.do_mg_l:.2f},{STATE.do_sat_pct:.1f}\r".encode()
    assert (cold < STATE.do_mg_l) == (STATE.temperature_c < 20)
    assert circuit("ph").temperature == 25.0
