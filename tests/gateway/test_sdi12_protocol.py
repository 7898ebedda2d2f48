"""The pure SDI-12 core: CRC against the specification's examples, commands,
reply grammar, and arbitrary bytes into every parser (only typed rejections)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.drivers.sdi12.protocol import (
    ADDRESSES,
    MAX_VALUES_CHARS_C,
    MAX_VALUES_CHARS_M,
    Aborted,
    CountMismatch,
    DataCollector,
    Malformed,
    MeasureReply,
    MeasureRequest,
    Sdi12BadCrc,
    Sdi12Rejection,
    WrongAddress,
    acknowledge,
    address_query,
    append_crc,
    crc16,
    crc_chars,
    identify,
    identify_measurement,
    identify_parameter,
    parse_acknowledge,
    parse_address,
    parse_data,
    parse_identity,
    parse_measure_reply,
    parse_parameter_info,
    parse_values,
    send_data,
    strip_echo,
)
from simulators.sdi12 import sdi12_crc

# SDI-12 v1.4 §4.4.12.3 and §5.1.1: response body → CRC characters (sensor-protocols §4.4).
SPEC_CRCS = [
    (b"0+3.14", b"OqZ"),
    (b"0+3.14+2.718", b"IWO"),
    (b"0+3.14+2.718+1.414", b"Ipz"),
    (b"0+2.718", b"Gbc"),
    (b"0+1.11+2.22+3.33+4.44+5.55+6.66", b"I]q"),
    (b"0+1.414", b"GtW"),
    (b"0+7.77+8.88+9.99", b"IvW"),
    (b"1+1.23+2.34+345+4.4678", b"KoO"),
    (b"0+1.234-4.56+12354-0.00045+2.223+145.5+7.7003+4328.8+9+10+11.433+12", b"Ba]"),
]


@pytest.mark.parametrize(("body", "chars"), SPEC_CRCS)
def test_crc_reproduces_every_specification_example(body: bytes, chars: bytes) -> None:
    assert crc_chars(crc16(body)) == chars
    assert append_crc(body) == body + chars
    assert sdi12_crc(body) == chars  # the simulator's own copy agrees


def test_crc_of_nothing_is_zero_and_encodes_as_three_at_signs() -> None:
    assert crc16(b"") == 0
    assert crc_chars(0) == b"@@@"
    assert crc_chars(0xFFFF) == b"O\x7f\x7f"  # the last two may be DEL: not printable


def test_spec_crc_examples_parse_as_data_replies() -> None:
    assert parse_data(b"0+3.14OqZ", "0", crc=True) == (3.14,)
    assert parse_data(b"1+1.23+2.34+345+4.4678KoO", "1", crc=True) == (1.23, 2.34, 345.0, 4.4678)
    long = b"0+1.234-4.56+12354-0.00045+2.223+145.5+7.7003+4328.8+9+10+11.433+12Ba]"
    values = parse_data(long, "0", crc=True, max_values_chars=MAX_VALUES_CHARS_C)
    assert values == (
        1.234,
        -4.56,
        12354.0,
        -0.00045,
        2.223,
        145.5,
        7.7003,
        4328.8,
        9,
        10,
        11.433,
        12,
    )
    with pytest.raises(Malformed, match="more than the 35"):
        parse_data(long, "0", crc=True, max_values_chars=MAX_VALUES_CHARS_M)


def test_a_crc_that_does_not_match_is_rejected_as_crc() -> None:
    with pytest.raises(Sdi12BadCrc) as info:
        parse_data(b"0+3.14OqY", "0", crc=True)
    assert info.value.reason == "crc"
    with pytest.raises(Sdi12BadCrc):
        parse_data(b"0+3.15OqZ", "0", crc=True)  # one digit changed in transit
    with pytest.raises(Malformed, match="too short"):
        parse_data(b"0Oq", "0", crc=True)


def test_commands() -> None:
    assert acknowledge("0") == "0!"
    assert address_query() == "?!"
    assert identify("a") == "aI!"
    assert MeasureRequest().command("0") == "0M!"
    assert MeasureRequest.parse("MC").command("3") == "3MC!"
    assert MeasureRequest.parse("C").command("Z") == "ZC!"
    assert MeasureRequest.parse("CC2").command("1") == "1CC2!"
    assert MeasureRequest.parse("M9").code == "M9"
    assert send_data("0", 0) == "0D0!"
    assert send_data("x", 9) == "xD9!"
    assert identify_measurement("0", MeasureRequest.parse("CC")) == "0ICC!"
    assert identify_parameter("0", MeasureRequest(), 1) == "0IM_001!"
    for bad in ("?", "!", "", "00", " ", "é"):
        with pytest.raises(ValueError):
            acknowledge(bad)
    for bad in ("R", "M0", "MCC", "c", "M10", "V"):
        with pytest.raises(ValueError):
            MeasureRequest.parse(bad)
    with pytest.raises(ValueError):
        send_data("0", 10)
    assert len(ADDRESSES) == 62 and ADDRESSES[:10] == "0123456789"


def test_identity_parses_the_reference_example() -> None:
    # joembedded/SDI12Term README (sensor-protocols §4.3)
    identity = parse_identity(b"513STS AG  4900001.51157252", "5")
    assert (identity.sdi12_version, identity.vendor, identity.model) == ("1.3", "STS AG", "490000")
    assert (identity.version, identity.serial, identity.version_number) == ("1.5", "1157252", 13)
    minimal = parse_identity(b"014VENDOR12MODEL1100", "0")
    assert minimal.serial == "" and minimal.vendor == "VENDOR12"
    with pytest.raises(Malformed, match="characters"):
        parse_identity(b"014VENDOR12MODEL110", "0")  # one short
    with pytest.raises(Malformed, match="characters"):
        parse_identity(b"014VENDOR12MODEL1100" + b"X" * 14, "0")  # serial over 13
    with pytest.raises(Malformed, match="version"):
        parse_identity(b"0x4VENDOR12MODEL1100", "0")
    with pytest.raises(WrongAddress):
        parse_identity(b"114VENDOR12MODEL1100", "0")


def test_measure_replies() -> None:
    m, c = MeasureRequest(), MeasureRequest(concurrent=True)
    assert parse_measure_reply(b"00053", "0", m) == MeasureReply("0", 5, 3)
    assert parse_measure_reply(b"004512", "0", c) == MeasureReply("0", 45, 12)
    assert parse_measure_reply(b"101504", "1", c) == MeasureReply("1", 15, 4)
    for line in (b"0005", b"000531", b"00a53", b"0+053", b"0"):
        with pytest.raises(Malformed):
            parse_measure_reply(line, "0", m)
    with pytest.raises(Malformed):
        parse_measure_reply(b"00053", "0", c)  # C wants two digits of count
    with pytest.raises(WrongAddress) as info:
        parse_measure_reply(b"10053", "0", m)
    assert info.value.reason == "wrong-address"


def test_acknowledge_address_and_echo() -> None:
    parse_acknowledge(b"0", "0")
    with pytest.raises(Malformed):
        parse_acknowledge(b"00", "0")
    with pytest.raises(WrongAddress):
        parse_acknowledge(b"1", "0")
    assert parse_address(b"7") == "7"
    with pytest.raises(Malformed):
        parse_address(b"\xb0\xff")  # two sondes answering ?! at once
    assert strip_echo(b"0M!00053", b"0M!") == b"00053"
    assert strip_echo(b"00053", b"0M!") == b"00053"


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("", ()),
        ("+3.14+2.718+1.414", (3.14, 2.718, 1.414)),
        ("+1.234-4.56+12354-0.00045", (1.234, -4.56, 12354.0, -0.00045)),
        ("-9999999", (-9999999.0,)),
        ("+.5+5.", (0.5, 5.0)),
        ("+1234.567", (1234.567,)),
    ],
)
def test_value_grammar_accepts(text: str, values: tuple[float, ...]) -> None:
    assert parse_values(text) == values


@pytest.mark.parametrize(
    "text",
    [
        "3.14",  # no sign
        "+",  # no digits
        "+.",
        "+12345678",  # 8 digits
        "+1.2.3",  # two points
        "+1e5",
        "+1,2",
        "++1",
        "+1 ",
        "+nan",
        "+12345678.",  # 10 characters
    ],
)
def test_value_grammar_refuses(text: str) -> None:
    with pytest.raises(Malformed):
        parse_values(text)


def test_nine_character_value_is_the_limit() -> None:
    assert parse_values("+1234.567") == (1234.567,)
    assert parse_values("-123456.7") == (-123456.7,)


def test_parameter_info() -> None:
    info = parse_parameter_info(b"0,PR,mm,precipitation rate per day;", "0")
    assert info is not None
    assert (info.name, info.units, info.extra) == ("PR", "mm", ("precipitation rate per day",))
    assert parse_parameter_info(b"0", "0") is None
    body = b"0,CU,degrees C,average air temperature,calibration data,40,1235;"
    with_crc = parse_parameter_info(append_crc(body), "0", crc=True)
    assert with_crc is not None and with_crc.units == "degrees C"
    for bad in (b"0,PR;", b"0PR,mm;", b"0,PR,mm"):
        with pytest.raises(Malformed):
            parse_parameter_info(bad, "0")


def test_collector_reads_until_the_count_and_refuses_too_many_or_too_few() -> None:
    c = DataCollector(3)
    assert not c.add((3.14,))
    assert c.next_command == 1
    assert not c.add((2.718,))
    assert c.add((1.414,))
    assert c.values == [3.14, 2.718, 1.414]
    with pytest.raises(CountMismatch):
        DataCollector(2).add((1.0, 2.0, 3.0))
    aborted = DataCollector(2)
    with pytest.raises(Aborted) as info:
        aborted.add(())
    assert info.value.reason == "aborted"
    short = DataCollector(99)
    for _ in range(9):
        assert not short.add((1.0,))
    with pytest.raises(CountMismatch, match="D0-D9"):
        short.add((1.0,))


# -- fuzzing: arbitrary bytes never escape as anything but a typed rejection ---------------

PARSERS: dict[str, Callable[[bytes], object]] = {
    "acknowledge": lambda b: parse_acknowledge(b, "0"),
    "address": parse_address,
    "identity": lambda b: parse_identity(b, "0"),
    "measure-M": lambda b: parse_measure_reply(b, "0", MeasureRequest()),
    "measure-CC": lambda b: parse_measure_reply(b, "0", MeasureRequest(concurrent=True, crc=True)),
    "data": lambda b: parse_data(b, "0", crc=False, max_values_chars=MAX_VALUES_CHARS_M),
    "data-crc": lambda b: parse_data(b, "0", crc=True),
    "parameter": lambda b: parse_parameter_info(b, "0"),
    "parameter-crc": lambda b: parse_parameter_info(b, "0", crc=True),
    "values": lambda b: parse_values(b.decode("latin-1")),
}

# Bytes that look like SDI-12 often enough to reach the deeper branches.
_sdi12ish = st.lists(
    st.sampled_from(
        [
            b"0",
            b"1",
            b"+",
            b"-",
            b".",
            b"5",
            b"9",
            b",",
            b";",
            b"!",
            b"\x7f",
            b"\xb0",
            b"O",
            b"q",
            b"Z",
            b"e",
        ]
    ),
    max_size=40,
).map(b"".join)


@pytest.mark.parametrize("name", sorted(PARSERS))
@settings(max_examples=300, deadline=None)
@given(data=st.one_of(st.binary(max_size=120), _sdi12ish))
@example(data=b"")
@example(data=b"0+3.14OqZ")
@example(data=b"0" + b"+1" * 40)
def test_every_parser_returns_or_rejects_with_a_reason(name: str, data: bytes) -> None:
    rejection = _rejection(PARSERS[name], data)
    if rejection is not None:
        assert rejection.reason in {"malformed", "wrong-address", "crc"}
        assert rejection.problem  # says what was wrong


def _rejection(parse: Callable[[bytes], object], data: bytes) -> Sdi12Rejection | None:
    """Run one parser; any exception but a typed rejection fails the test by escaping."""
    try:
        parse(data)
    except Sdi12Rejection as exc:
        return exc
    return None


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(
        st.decimals(
            min_value=-99999, max_value=99999, places=2, allow_nan=False, allow_infinity=False
        ),
        min_size=1,
        max_size=9,
    ),
    address=st.sampled_from(ADDRESSES),
)
def test_formatted_values_survive_the_round_trip_with_crc(
    values: list[object], address: str
) -> None:
    text = "".join(f"{v:+}" for v in values)
    body = f"{address}{text}".encode()
    parsed = parse_data(append_crc(body), address, crc=True, max_values_chars=200)
    assert parsed == tuple(float(str(v)) for v in values)
    corrupted = bytearray(append_crc(body))
    corrupted[1] ^= 0x01  # one bit flipped in the sign or first digit
    with pytest.raises(Sdi12Rejection):
        parse_data(bytes(corrupted), address, crc=True, max_values_chars=200)
