"""Register profiles: strict loading, the codec (every byte/word order), read planning.

The simulator's encoder (simulators.modbus.encode_words) is written apart from
the gateway's codec; the cross-check at the end feeds one into the other for
every shipped profile.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.drivers.modbus.profile import (
    CodecError,
    ReadBlock,
    ValueSpec,
    decode_reading,
    decode_value,
    encode_value,
    load_profile,
    plan_reads,
    shipped_profiles,
)
from gateway.errors import ConfigError
from simulators.modbus import encode_words, load_sim_profile

# A float32's big-endian bytes A B C D, as the vendors write the four orders.
ORDERS = {
    # name: (word_order, byte_order, byte positions in register order)
    "ABCD": ("big", "big", (0, 1, 2, 3)),
    "BADC": ("big", "little", (1, 0, 3, 2)),
    "CDAB": ("little", "big", (2, 3, 0, 1)),
    "DCBA": ("little", "little", (3, 2, 1, 0)),
}


def words_of(data: bytes, positions: tuple[int, ...]) -> list[int]:
    ordered = bytes(data[p] for p in positions)
    return [int.from_bytes(ordered[i : i + 2], "big") for i in range(0, len(ordered), 2)]


def spec(**kw: object) -> ValueSpec:
    base: dict[str, object] = {"quantity": "x", "unit": "1", "address": 0}
    base.update(kw)
    return ValueSpec(**base)  # type: ignore[arg-type]


def write(tmp_path: Path, text: str, name: str = "acme-probe.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- codec ------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_float32_in_each_byte_and_word_order(order: str) -> None:
    word_order, byte_order, positions = ORDERS[order]
    s = spec(type="float32", word_order=word_order, byte_order=byte_order)
    data = struct.pack(">f", 7.25)  # 40 E8 00 00
    words = words_of(data, positions)
    assert decode_value(s, words) == 7.25
    assert encode_value(s, 7.25) == words


@pytest.mark.parametrize("order", sorted(ORDERS))
@pytest.mark.parametrize(("typ", "raw"), [("int32", -123456789), ("uint32", 0xDEADBEEF)])
def test_32_bit_integers_in_each_order(order: str, typ: str, raw: int) -> None:
    word_order, byte_order, positions = ORDERS[order]
    s = spec(type=typ, word_order=word_order, byte_order=byte_order)
    data = struct.pack(">i" if typ == "int32" else ">I", raw)
    assert decode_value(s, words_of(data, positions)) == raw


def test_known_float_words_from_the_reference() -> None:
    # sensor-protocols §3.4: the server returned [16619, 1619, ...] for 7.34...
    s = spec(type="float32")
    value = decode_value(s, [16619, 1619])
    assert value is not None
    assert value == pytest.approx(7.34452, abs=1e-5)
    assert decode_value(s, [0x4194, 0x0000]) == 18.5


def test_16_bit_types_scale_offset_and_byte_order() -> None:
    assert decode_value(spec(type="int16", scale=0.1), [0x00FA]) == pytest.approx(25.0)
    assert decode_value(spec(type="int16", scale=0.1), [0xFF4B]) == pytest.approx(-18.1)
    assert decode_value(spec(type="uint16"), [0xFF4B]) == 0xFF4B
    assert decode_value(spec(type="uint16", byte_order="little"), [0x3412]) == 0x1234
    assert decode_value(spec(type="uint16", scale=0.5, offset=-10), [40]) == 10.0


def test_decimal_places_register() -> None:
    s = spec(type="int16", decimals_register=5)
    assert decode_value(s, [725], decimals=2) == pytest.approx(7.25)
    assert decode_value(s, [725], decimals=0) == 725
    with pytest.raises(CodecError, match="decimal-places register holds 12"):
        decode_value(s, [725], decimals=12)
    with pytest.raises(CodecError, match="not read"):
        decode_value(s, [725])
    assert encode_value(s, 7.25, decimals=2) == [725]


def test_missing_values_nan_and_sentinels() -> None:
    ysi = spec(type="float32", missing=(0xFFFFFFFF,))
    assert decode_value(ysi, [0xFFFF, 0xFFFF]) is None
    assert decode_value(spec(type="float32"), [0x7FC0, 0x0000]) is None  # any NaN
    assert decode_value(spec(type="int16", missing=(-9999,)), [(-9999) & 0xFFFF]) is None
    with pytest.raises(CodecError, match="infinite"):
        decode_value(spec(type="float32"), [0x7F80, 0x0000])


@pytest.mark.parametrize(
    "words", [[], [1, 2], [70000], [-1], [True]], ids=["none", "two", "big", "neg", "bool"]
)
def test_bad_words_are_codec_errors(words: list[int]) -> None:
    with pytest.raises(CodecError):
        decode_value(spec(type="int16"), words)


def test_encode_refuses_values_that_do_not_fit() -> None:
    with pytest.raises(CodecError, match="outside int16"):
        encode_value(spec(type="int16", scale=0.01), 400.0)
    with pytest.raises(CodecError):
        encode_value(spec(type="float32"), 1e39)


# -- reading plans ------------------------------------------------------------------------------


def test_golden_supmea_request_and_reply_decode() -> None:
    p = load_profile("supmea-sup-ph8001")
    assert plan_reads(p) == (ReadBlock(3, 0, 3),)  # 01 03 00 00 00 03 05 CB
    decoded = decode_reading(p, {ReadBlock(3, 0, 3): [0x00FA, 0x02BC, 0x0006]})
    got = {s.quantity: (round(v, 6), s.unit) for s, v in decoded.values}
    assert got == {"temperature": (25.0, "Cel"), "ph": (7.0, "pH"), "ph_mv": (0.6, "mV")}
    assert decoded.missing == decoded.errors == ()


def test_plans_respect_gaps_alignment_and_function_codes(tmp_path: Path) -> None:
    assert plan_reads(load_profile("ysi-odo-rtu")) == (ReadBlock(4, 0, 8),)
    assert plan_reads(load_profile("boqu-bh-485-nh")) == (ReadBlock(3, 0, 4), ReadBlock(3, 16, 2))
    path = write(
        tmp_path,
        """
model = "Acme"
[read]
align = 2
max_count = 4
[[value]]
quantity = "a"
unit = "1"
address = 3
type = "float32"
[[value]]
quantity = "b"
unit = "1"
address = 6
type = "uint16"
[[value]]
quantity = "c"
unit = "1"
address = 9
type = "uint16"
function = 4
decimals_register = 20
""",
    )
    # a float32 at 3 needs 2..5 when reads start even; it is never split across reads
    assert plan_reads(load_profile(str(path))) == (
        ReadBlock(3, 2, 4),
        ReadBlock(3, 6, 2),
        ReadBlock(4, 8, 2),
        ReadBlock(4, 20, 2),
    )


def test_decode_reading_reports_missing_status_and_unread_registers() -> None:
    p = load_profile("insitu-aqua-troll-400-ph")
    (block,) = plan_reads(p)
    words = [0] * block.count

    def put(address: int, value: float) -> None:
        hi, lo = struct.unpack(">HH", struct.pack(">f", value))
        words[address - block.address : address - block.address + 2] = [hi, lo]

    put(1538, 7.5)
    put(1546, -29.0)
    words[1558 - block.address] = 7  # ORP: "sensor communication error"
    decoded = decode_reading(p, {block: words})
    assert [(s.quantity, v) for s, v in decoded.values] == [("ph", 7.5), ("ph_mv", -29.0)]
    assert [(s.quantity, why) for s, why in decoded.missing] == [
        ("orp", "status register 1558 = 7")
    ]
    short = decode_reading(p, {ReadBlock(3, block.address, 5): words[:5]})
    assert [s.quantity for s, _ in short.values] == ["ph"]
    assert {s.quantity: why for s, why in short.errors} == {
        "ph_mv": "register 1546 was not read",
        "orp": "register 1554 was not read",
    }


# -- loading ------------------------------------------------------------------------------------


def test_every_shipped_profile_loads() -> None:
    names = set(shipped_profiles())
    assert {
        "supmea-sup-ph8001",
        "seeed-ectds10",
        "dfrobot-sen0710",
        "ysi-odo-rtu",
        "boqu-bh-485-nh",
        "hach-ldo-aq",
        "insitu-aqua-troll-400-ph",
    } <= names
    for name in names:
        p = load_profile(name)
        assert p.name == name and p.values and plan_reads(p)
        assert Path(p.source).is_file()


def test_a_profile_file_by_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
model = "Acme pH-1"
vendor = "Acme"
function = 4
word_order = "little"
[serial]
baudrate = 19200
parity = "e"
slave = 7
[[value]]
quantity = "ph"
unit = "pH"
address = 10
type = "float32"
[[setup]]
address = 100
values = [1]
when = "reading"
wait_s = 0.5
[[identify]]
address = 200
equals = 42
""",
    )
    p = load_profile(str(path))
    assert (p.model, p.serial.baudrate, p.serial.parity, p.serial.slave) == (
        "Acme pH-1",
        19200,
        "E",
        7,
    )
    (v,) = p.values
    assert (v.function, v.word_order, v.byte_order) == (4, "little", "big")
    assert p.setup[0].when == "reading" and p.setup[0].function == 6
    assert p.identify[0].function == 4
    assert load_profile("acme-probe.toml", base=tmp_path).model == "Acme pH-1"


BAD_PROFILES = [
    ('model = "A"\n', "value", "at least one"),
    ('[[value]]\nquantity="a"\nunit="1"\naddress=0\ntype="int16"\n', "model", "required"),
    (
        'model="A"\n[[value]]\nquantity="a"\nunit="1"\naddress=0\ntype="int64"\n',
        "value[0].type",
        "is not one of",
    ),
    (
        'model="A"\n[[value]]\nquantity="a"\nunit="1"\naddress=0\ntype="int16"\nsacle=2\n',
        "value[0].sacle",
        "not a known setting",
    ),
    (
        'model="A"\n[[value]]\nquantity="a"\nunit="1"\naddress=65535\ntype="float32"\n',
        "value[0].address",
        "not a register address",
    ),
    (
        'model="A"\n[[value]]\nquantity="a"\nunit="1"\naddress=0\ntype="int16"\nfunction=6\n',
        "value[0].function",
        "is not one of",
    ),
    (
        'model="A"\n[[value]]\nquantity="a"\nunit="1"\naddress=0\ntype="int16"\nscale=0\n',
        "value[0].scale",
        "not 0",
    ),
    (
        'model="A"\n[[value]]\nquantity="a"\nunit="1"\naddress=0\ntype="float32"\n'
        "decimals_register=4\n",
        "value[0].decimals_register",
        "integer types",
    ),
    (
        'model="A"\n[[value]]\nquantity="a"\nunit="1"\naddress=0\ntype="int16"\nmissing=[40000]\n',
        "value[0].missing[0]",
        "-32768..32767",
    ),
    (
        'model="A"\n[[value]]\nquantity="a"\nunit="1"\naddress=0\ntype="int16"\nstatus_register=5\n',
        "value[0].status_bad",
        "go together",
    ),
    (
        'model="A"\n[[value]]\nquantity="a"\nunit="1"\naddress=0\ntype="float32"\n'
        '[[value]]\nquantity="b"\nunit="1"\naddress=1\ntype="int16"\n',
        "value[1].address",
        "also value[0]",
    ),
    (
        'model="A"\n[[value]]\nquantity="a"\nunit="1"\naddress=0\ntype="int16"\n'
        '[[value]]\nquantity="a"\nunit="1"\naddress=1\ntype="int16"\n',
        "value[1].quantity",
        "already value[0]",
    ),
    (
        'model="A"\n[[value]]\nquantity="A b"\nunit="1"\naddress=0\ntype="int16"\n',
        "value[0].quantity",
        "not a name",
    ),
    (
        'model="A"\n[serial]\nparity="X"\n[[value]]\nquantity="a"\nunit="1"\naddress=0\n'
        'type="int16"\n',
        "serial.parity",
        "is not one of",
    ),
    (
        'model="A"\n[read]\nmax_count=126\n[[value]]\nquantity="a"\nunit="1"\naddress=0\n'
        'type="int16"\n',
        "read.max_count",
        "1..125",
    ),
    (
        'model="A"\n[read]\nmax_count=1\n[[value]]\nquantity="a"\nunit="1"\naddress=0\n'
        'type="float32"\n',
        "value[0].type",
        "does not fit",
    ),
    (
        'model="A"\n[[value]]\nquantity="a"\nunit="1"\naddress=0\ntype="int16"\n'
        "[[setup]]\naddress=1\nvalues=[1, 2]\n",
        "setup[0].values",
        "1..1 word",
    ),
    (
        'model="A"\n[[value]]\nquantity="a"\nunit="1"\naddress=0\ntype="int16"\n'
        '[[setup]]\naddress=1\nvalues=[1]\nwhen="always"\n',
        "setup[0].when",
        "is not 'connect'",
    ),
    (
        'model="A"\n[[value]]\nquantity="a"\nunit="1"\naddress=0\ntype="int16"\n'
        "[[identify]]\naddress=1\n",
        "identify[0].equals",
        "required",
    ),
    ('model="A"\nvalue = 3\n', "value", "array of tables"),
]


@pytest.mark.parametrize(("text", "key", "problem"), BAD_PROFILES)
def test_invalid_profiles_name_the_file_and_key(
    tmp_path: Path, text: str, key: str, problem: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_profile(str(path))
    assert info.value.where == f"{path}: {key}"
    assert problem in info.value.problem


def test_unreadable_or_unknown_profiles(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a shipped profile"):
        load_profile("no-such-model")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_profile(str(tmp_path / "absent.toml"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_profile(str(write(tmp_path, "model = ")))
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'model = "\xe9"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_profile(str(latin))


# -- properties ---------------------------------------------------------------------------------

WORD = st.integers(min_value=0, max_value=0xFFFF)
SPECS = st.builds(
    ValueSpec,
    quantity=st.just("x"),
    unit=st.just("1"),
    address=st.just(0),
    type=st.sampled_from(["int16", "uint16", "int32", "uint32", "float32"]),
    byte_order=st.sampled_from(["big", "little"]),
    word_order=st.sampled_from(["big", "little"]),
    scale=st.sampled_from([1.0, 0.1, 0.01, 10.0, -1.0]),
    offset=st.sampled_from([0.0, -40.0, 3.5]),
)


@given(s=SPECS, words=st.lists(WORD, min_size=2, max_size=2))
def test_any_words_decode_and_encode_back(s: ValueSpec, words: list[int]) -> None:
    words = words[: s.count]
    try:
        value = decode_value(s, words)
    except CodecError:
        return  # infinities, refused with a reason
    if value is None:
        assert s.type == "float32"  # NaN is the only sentinel without a `missing` list
        return
    assert math.isfinite(value)
    back = decode_value(s, encode_value(s, value))
    assert back == pytest.approx(value, rel=1e-6, abs=1e-6)


@settings(max_examples=200)
@given(data=st.data())
def test_arbitrary_words_never_escape_and_every_value_is_accounted_for(data: st.DataObject) -> None:
    p = load_profile(data.draw(st.sampled_from(sorted(shipped_profiles()))))
    words = {}
    for block in plan_reads(p):
        n = data.draw(st.integers(min_value=0, max_value=block.count + 2))
        words[block] = data.draw(st.lists(st.integers(-5, 0x1_0005), min_size=n, max_size=n))
    decoded = decode_reading(p, words)
    assert len(decoded.values) + len(decoded.missing) + len(decoded.errors) == len(p.values)
    assert all(math.isfinite(v) for _, v in decoded.values)


RAW_RANGE = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "float32": (-1e6, 1e6),
}


@settings(max_examples=100)
@given(data=st.data())
def test_the_simulators_encoder_agrees_with_the_gateways_codec(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(shipped_profiles())))
    gw, sim = load_profile(name), load_sim_profile(name)
    for g, s in zip(gw.values, sim.values, strict=True):
        assert (g.quantity, g.address, g.function, g.type) == (
            s.quantity,
            s.address,
            s.function,
            s.type,
        )
        low, high = RAW_RANGE[g.type]
        if g.type != "float32":
            low, high = sorted((g.offset + g.scale * low, g.offset + g.scale * high))
        value = data.draw(st.floats(min_value=max(low, -1e6), max_value=min(high, 1e6)))
        got = decode_value(g, encode_words(s, value))
        assert got is not None
        if g.type == "float32":
            assert got == pytest.approx(value, rel=1e-6, abs=1e-5)
        else:
            assert got == pytest.approx(value, abs=abs(g.scale) / 2 + 1e-9)


def test_the_documented_example_profile_loads(tmp_path: Path) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "modbus-profiles.md").read_text()
    example = next(
        block.split("```", 1)[0]
        for block in doc.split("```toml\n")[1:]
        if block.startswith("# acme-ph1.toml")
    )
    p = load_profile(str(write(tmp_path, example, "acme-ph1.toml")))
    assert [v.quantity for v in p.values] == ["temperature", "ph", "orp"]
    assert p.values[1].decimals_register == 5 and p.values[2].status_bad == (3, 7)
    assert p.setup[0].when == "reading" and p.identify[0].equals == 42
    assert plan_reads(p) == (
        ReadBlock(3, 0, 2),
        ReadBlock(3, 5, 1),
        ReadBlock(4, 2, 2),
        ReadBlock(4, 10, 1),
    )
