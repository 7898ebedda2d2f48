"""The pure EZO parser against every reply string in sensor-protocols §1."""

from __future__ import annotations

import contextlib
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.drivers.ezo.protocol import (
    DataLine,
    QueryReply,
    StatusLine,
    parse_identity,
    parse_line,
    parse_outputs,
    parse_reading,
)
from gateway.drivers.link.cadence import next_slot
from gateway.errors import ProtocolError
from gateway.pipeline import Value

# -- parse_line: response codes --------------------------------------------------------


@pytest.mark.parametrize("code", ["*OK", "*ER", "*OV", "*UV", "*RS", "*RE", "*SL", "*WA", "*DONE"])
@pytest.mark.parametrize("case", [str.upper, str.lower])
@pytest.mark.parametrize("terminator", [b"\r", b"", b"\r\n", b"\n"])
def test_status_codes(code: str, case: object, terminator: bytes) -> None:
    assert callable(case)
    line = case(code).encode() + terminator
    assert parse_line(line) == StatusLine(code)


@pytest.mark.parametrize("line", [b"*XX", b"*", b"*OKAY", b"*OK,1"])
def test_unknown_status_code(line: bytes) -> None:
    with pytest.raises(ProtocolError, match="unknown response code"):
        parse_line(line)


# -- parse_line: query replies -----------------------------------------------------------

QUERY_REPLIES = [
    ("?I,pH,2.16", "I", ("pH", "2.16")),
    ("?i,pH,1.98", "I", ("pH", "1.98")),
    ("?I,pH,2.12", "I", ("pH", "2.12")),
    ("?I,EC,2.15", "I", ("EC", "2.15")),
    ("?I,DO,2.16", "I", ("DO", "2.16")),
    ("?I,D.O.,1.1", "I", ("D.O.", "1.1")),
    ("?I,ORP,1.0", "I", ("ORP", "1.0")),
    ("?i,PMP,1.1", "I", ("PMP", "1.1")),
    ("?Status,P,5.038", "STATUS", ("P", "5.038")),
    ("?STATUS,P,4.89", "STATUS", ("P", "4.89")),
    ("?,O,EC,TDS,S,SG", "O", ("EC", "TDS", "S", "SG")),
    ("?O,EC,TDS", "O", ("EC", "TDS")),
    ("?,O,EC,TDS", "O", ("EC", "TDS")),
    ("?,O,%,mg", "O", ("%", "mg")),
    ("?,O,mg", "O", ("mg",)),
    ("?*OK,1", "*OK", ("1",)),
    ("?*OK,0", "*OK", ("0",)),
    ("?*ok,1", "*OK", ("1",)),
    ("?RESPONSE,1", "RESPONSE", ("1",)),
    ("?T,19.5", "T", ("19.5",)),
    ("?Cal,2", "CAL", ("2",)),
    ("?CAL,2", "CAL", ("2",)),
    ("?Slope,99.7,100.3,-0.89", "SLOPE", ("99.7", "100.3", "-0.89")),
    ("?SLOPE,100,100,0", "SLOPE", ("100", "100", "0")),
    ("?PHEXT,0", "PHEXT", ("0",)),
    ("?pHext,1", "PHEXT", ("1",)),
    ("?Name,TANK-A", "NAME", ("TANK-A",)),
    ("?Name,", "NAME", ("",)),
    ("?L,1", "L", ("1",)),
    ("?C,1", "C", ("1",)),
    ("?K,0.1", "K", ("0.1",)),
    ("?TDS,0.65", "TDS", ("0.65",)),
    ("?S,12.5,ppt", "S", ("12.5", "ppt")),
    ("?S,k", "S", ("k",)),
    ("?,P,101.3", "P", ("101.3",)),
    ("?ORPext,0", "ORPEXT", ("0",)),
    ("?D,6", "D", ("6",)),
    ("?M,4", "M", ("4",)),
    ("?Baud,38400", "BAUD", ("38400",)),
    ("?Plock,0", "PLOCK", ("0",)),
    ("?EXPORT,10", "EXPORT", ("10",)),
]


@pytest.mark.parametrize(("text", "key", "fields"), QUERY_REPLIES)
def test_query_replies(text: str, key: str, fields: tuple[str, ...]) -> None:
    assert parse_line(text.encode() + b"\r") == QueryReply(key, fields, text)


@pytest.mark.parametrize("text", ["?", "?,", "?1,2", "?,,O"])
def test_query_without_identifier(text: str) -> None:
    with pytest.raises(ProtocolError, match="no valid identifier"):
        parse_line(text.encode())


# -- parse_line: data lines -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("7.156", (7.156,)),
        ("9.560", (9.56,)),
        ("225.4", (225.4,)),
        ("-12.0", (-12.0,)),
        ("25.104", (25.104,)),
        ("412.0,1.025", (412.0, 1.025)),
        ("8.93,95.1", (8.93, 95.1)),
        ("4,112.00", (4.0, 112.0)),
        ("100.00,104.00,108.00,112.00", (100.0, 104.0, 108.0, 112.0)),
        ("1.5e3", (1500.0,)),
        (".5", (0.5,)),
        ("no output", ()),
        ("No Output", ()),
        ("NO OUTPUT", ()),
    ],
)
def test_data_lines(text: str, values: tuple[float, ...]) -> None:
    assert parse_line(text.encode() + b"\r") == DataLine(values, text)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b"", "empty line"),
        (b"\r", "empty line"),
        (b"7.1\x00", "control byte 0x00 at offset 3"),
        (b"7.\x1b1", "control byte 0x1b"),
        (b"7.1\x7f", "control byte 0x7f"),
        (b"\xb0\xc3\xff", "non-ASCII byte 0xb0 at offset 0"),
        (b"7.1\xe9", "non-ASCII byte 0xe9"),
        (b"abc", "is not a number"),
        (b"nan", "is not a number"),
        (b"NaN", "is not a number"),
        (b"inf", "is not a number"),
        (b"-Infinity", "is not a number"),
        (b"1_000", "is not a number"),
        (b"1e999", "not a finite number"),
        (b"7.1,", "field 2"),
        (b",7.1", "field 1"),
        (b"7.1 ", "is not a number"),
        (b" 7.1", "is not a number"),
        (b"0x10", "is not a number"),
        (b"7" * 300, "longer than 256"),
        (b"7.1\r\r", "control byte 0x0d"),
    ],
)
def test_garbage(line: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem.replace("(", r"\(")):
        parse_line(line)


def test_error_names_sensor_when_given() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_line(b"\xff", sensor="ph-1")
    assert info.value.sensor == "ph-1"
    assert "non-ASCII" in info.value.problem


@given(st.binary(max_size=300))
def test_parse_line_raises_only_protocol_error(data: bytes) -> None:
    try:
        result = parse_line(data)
    except ProtocolError:
        return
    assert isinstance(result, StatusLine | QueryReply | DataLine)
    if isinstance(result, DataLine):
        assert all(math.isfinite(v) for v in result.values)


@given(st.text(alphabet="0123456789.,-+eE?*OKIokno utp", max_size=40))
def test_parse_line_on_protocol_like_text(text: str) -> None:
    with contextlib.suppress(ProtocolError):
        parse_line(text.encode())


# -- parse_reading ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("circuit", "enabled", "text", "expected"),
    [
        ("ph", (), "7.156", (Value("ph", 7.156, "pH"),)),
        ("ph", (), "9.560", (Value("ph", 9.56, "pH"),)),
        ("orp", (), "225.4", (Value("orp", 225.4, "mV"),)),
        ("orp", (), "-310.2", (Value("orp", -310.2, "mV"),)),
        ("rtd", (), "25.104", (Value("temperature", 25.104, "Cel"),)),
        ("do", ("mg",), "8.93", (Value("do", 8.93, "mg/l"),)),
        ("do", ("%",), "95.1", (Value("do_sat", 95.1, "/100"),)),
        (
            "do",
            ("%", "mg"),
            "8.93,95.1",
            (Value("do", 8.93, "mg/l"), Value("do_sat", 95.1, "/100")),
        ),
        (
            "do",
            ("MG", "%"),
            "8.93,95.1",
            (Value("do", 8.93, "mg/l"), Value("do_sat", 95.1, "/100")),
        ),
        ("ec", ("EC",), "412.0", (Value("ec", 412.0, "uS/cm"),)),
        (
            "ec",
            ("SG", "EC"),
            "412.0,1.025",
            (Value("ec", 412.0, "uS/cm"), Value("specific_gravity", 1.025, "1")),
        ),
        (
            "ec",
            ("EC", "TDS", "S", "SG"),
            "412.0,206.0,0.26,1.000",
            (
                Value("ec", 412.0, "uS/cm"),
                Value("tds", 206.0, "ppm"),
                Value("salinity", 0.26, "PSU"),
                Value("specific_gravity", 1.0, "1"),
            ),
        ),
        (
            "ec",
            ("tds", "s"),
            "206,0.26",
            (Value("tds", 206.0, "ppm"), Value("salinity", 0.26, "PSU")),
        ),
        ("ec", (), "no output", ()),
        ("do", (), "No Output", ()),
    ],
)
def test_parse_reading(
    circuit: str, enabled: tuple[str, ...], text: str, expected: tuple[Value, ...]
) -> None:
    assert parse_reading(circuit, enabled, text) == expected


@pytest.mark.parametrize(
    ("circuit", "enabled", "text", "problem"),
    [
        ("ph", (), "7.1,7.2", "2 field"),
        ("ph", (), "", "is not a number"),
        ("ph", (), "nan", "is not a number"),
        ("ph", (), "inf", "is not a number"),
        ("ph", (), "1e400", "not a finite"),
        ("ph", (), "no output", "field"),
        ("ec", ("EC", "SG"), "412.0", "1 field.*expected 2"),
        ("ec", ("EC",), "412.0,1.025", "2 field.*expected 1"),
        ("ec", ("EC",), "no output", "1 field"),
        ("ec", (), "412.0", "expected 0 .none."),
        ("do", ("mg", "%"), "8.9,x", "do_sat value 'x' is not a number"),
        ("ec", ("XX",), "1", "unknown ec output"),
    ],
)
def test_parse_reading_rejects(
    circuit: str, enabled: tuple[str, ...], text: str, problem: str
) -> None:
    with pytest.raises(ProtocolError, match=problem):
        parse_reading(circuit, enabled, text)


def test_parse_reading_unknown_circuit() -> None:
    with pytest.raises(ValueError, match="unknown EZO circuit"):
        parse_reading("co2", (), "400")


# -- parse_identity and parse_outputs ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("?I,pH,2.16", ("PH", "2.16")),
        ("?i,pH,1.98", ("PH", "1.98")),
        ("?I,PH,2.16", ("PH", "2.16")),
        ("?I,EC,2.15", ("EC", "2.15")),
        ("?I,DO,2.16", ("DO", "2.16")),
        ("?I,D.O.,1.1", ("DO", "1.1")),
        ("?I,ORP,1.0", ("ORP", "1.0")),
        ("?I,RTD,2.01", ("RTD", "2.01")),
        ("?i,PMP,1.1", ("PMP", "1.1")),
    ],
)
def test_parse_identity(text: str, expected: tuple[str, str]) -> None:
    assert parse_identity(text) == expected


@pytest.mark.parametrize(
    "text", ["?I,pH", "?I,pH,2.16,x", "?Status,P,5.038", "?I,,2.16", "?I,pH,v2", "7.156"]
)
def test_parse_identity_rejects(text: str) -> None:
    with pytest.raises(ProtocolError):
        parse_identity(text)


@pytest.mark.parametrize(
    ("circuit", "text", "expected"),
    [
        ("ec", "?,O,EC,TDS,S,SG", ("EC", "TDS", "S", "SG")),
        ("ec", "?O,SG,EC", ("EC", "SG")),
        ("ec", "?,O,ec,tds", ("EC", "TDS")),
        ("ec", "?,O,", ()),
        ("ec", "?,O,no output", ()),
        ("do", "?,O,%,mg", ("mg", "%")),
        ("do", "?O,mg", ("mg",)),
        ("do", "?,O,MG", ("mg",)),
        ("do", "?,O,%", ("%",)),
    ],
)
def test_parse_outputs(circuit: str, text: str, expected: tuple[str, ...]) -> None:
    assert parse_outputs(circuit, text) == expected


@pytest.mark.parametrize(
    ("circuit", "text"),
    [("ec", "?,O,EC,PH"), ("do", "?,O,EC"), ("ec", "?I,EC,2.15"), ("do", "*OK")],
)
def test_parse_outputs_rejects(circuit: str, text: str) -> None:
    with pytest.raises(ProtocolError):
        parse_outputs(circuit, text)


def test_outputs_feed_reading() -> None:
    outputs = parse_outputs("do", "?,O,%,mg")
    assert parse_reading("do", outputs, "8.93,95.1") == (
        Value("do", 8.93, "mg/l"),
        Value("do_sat", 95.1, "/100"),
    )


# -- poll cadence -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "now", "expected"),
    [
        (0.0, 0.3, 1.0),  # a quick poll keeps the cadence
        (0.0, 0.999, 1.0),
        (0.0, 1.0, 1.0),
        (0.0, 1.2, 2.0),  # overran: skip to the next slot on the same grid
        (0.0, 3.5, 4.0),
        (10.0, 10.0, 11.0),
    ],
)
def test_next_slot(previous: float, now: float, expected: float) -> None:
    assert next_slot(previous, 1.0, now) == pytest.approx(expected)
