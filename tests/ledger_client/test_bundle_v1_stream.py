"""The streaming v1 reader: the same bundle as Bundle.loads, strictness, bounded memory.

Also the checks Bundle.loads shares with it: repeated member names, the type
of ``version``, and the nesting limit.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ledger_client import bundle_v1_stream
from ledger_client.bundle import MAX_NESTING, Bundle, nesting_exceeds
from ledger_client.bundle_v1_stream import CHUNK_BYTES, V1Header, read_v1
from ledger_client.errors import MalformedBundle

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "v1"
CHUNKS = [1, 2, 3, 7, 64, 4093, CHUNK_BYTES]
HEADER_MEMBERS = [
    "format",
    "version",
    "origin",
    "device",
    "exported",
    "exporter",
    "keys",
    "checkpoints",
    "consistency",
    "anchors",
]
REQUIRED = [m for m in HEADER_MEMBERS if m != "exporter"] + ["entries"]


def fixture_doc(name: str = "bundle.json") -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((FIXTURE / name).read_text(encoding="utf-8"))
    return doc


def small_doc() -> dict[str, Any]:
    """The fixture with its first five entries: enough for reading, not for verifying."""
    doc = fixture_doc()
    doc["entries"] = doc["entries"][:5]
    return doc


def dump(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


def streamed(path: Path, chunk_bytes: int = CHUNK_BYTES) -> Bundle:
    """Everything read_v1 reads, as a Bundle (the iterator run to its end)."""
    header, entries = read_v1(path, chunk_bytes=chunk_bytes)
    assert isinstance(header, V1Header)
    return Bundle(
        origin=header.origin,
        device=header.device,
        keys=header.keys,
        entries=tuple(entries()),
        checkpoints=header.checkpoints,
        consistency=header.consistency,
        anchors=header.anchors,
        exported=header.exported,
        exporter=header.exporter,
    )


def write(tmp_path: Path, data: str | bytes, name: str = "b.json") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


# --- the same bundle as Bundle.loads ------------------------------------------------------------


@pytest.mark.parametrize("name", ["bundle.json", "bundle-partial.json"])
@pytest.mark.parametrize("chunk", CHUNKS)
def test_the_fixture_streams_to_what_bundle_loads_reads(name: str, chunk: int) -> None:
    path = FIXTURE / name
    expected = Bundle.loads(path.read_bytes())
    got = streamed(path, chunk)
    assert got.entries == expected.entries
    assert got == expected


def test_the_entries_function_reads_afresh_each_time() -> None:
    header, entries = read_v1(FIXTURE / "bundle-partial.json")
    first = list(entries())
    assert list(entries()) == first
    it = entries()
    assert next(it) == first[0]
    del it  # a consumer may stop early: the file is closed with the iterator
    assert header.exporter == "riverseal 0.1.0"


def _reordered(doc: dict[str, Any], order: list[str]) -> dict[str, Any]:
    return {name: doc[name] for name in order}


ORDERS = {
    "entries first": ["entries", *HEADER_MEMBERS],
    "entries in the middle": [*HEADER_MEMBERS[:4], "entries", *HEADER_MEMBERS[4:]],
    "reversed": ["entries", *reversed(HEADER_MEMBERS)],
    "exporter after entries": [*HEADER_MEMBERS[:5], *HEADER_MEMBERS[6:], "entries", "exporter"],
    "shuffled": random.Random(1).sample([*HEADER_MEMBERS, "entries"], 11),
}


@pytest.mark.parametrize("order", list(ORDERS.values()), ids=list(ORDERS))
@pytest.mark.parametrize("chunk", [5, 4093, CHUNK_BYTES])
def test_any_member_order_reads_the_same(tmp_path: Path, order: list[str], chunk: int) -> None:
    doc = fixture_doc("bundle-partial.json")
    expected = Bundle.from_json(doc)
    path = write(tmp_path, dump(_reordered(doc, order)))
    assert streamed(path, chunk) == expected


@pytest.mark.parametrize("chunk", [3, CHUNK_BYTES])
def test_unknown_members_are_ignored_wherever_they_are(tmp_path: Path, chunk: int) -> None:
    doc = small_doc()
    expected = Bundle.from_json(doc)
    doc = {
        "x-before": {"a": [1, 2, {"b": None}]},
        **doc,
        "x-after": [[1], {"c": ']}"[{'}, "tail"],
        "x-scalar": -1.5e3,
    }
    doc["entries"] = [{**e, "x-note": {"k": [True]}} for e in doc["entries"]]
    assert streamed(write(tmp_path, dump(doc)), chunk) == expected
    assert Bundle.loads(dump(doc)) == expected


def test_compact_json_and_a_missing_exporter(tmp_path: Path) -> None:
    doc = small_doc()
    del doc["exporter"]
    path = write(tmp_path, json.dumps(doc, separators=(",", ":"), ensure_ascii=False))
    got = streamed(path, 11)
    assert got == Bundle.loads(path.read_bytes())
    assert got.exporter == ""


def test_a_leading_byte_order_mark_is_skipped(tmp_path: Path) -> None:
    doc = small_doc()
    path = write(tmp_path, b"\xef\xbb\xbf" + dump(doc).encode())
    assert streamed(path) == Bundle.loads(path.read_bytes()) == Bundle.from_json(doc)


def test_an_empty_entries_array_reads(tmp_path: Path) -> None:
    doc = small_doc()
    doc["entries"] = []
    assert streamed(write(tmp_path, dump(doc)), 2).entries == ()


# --- strictness ------------------------------------------------------------------------------


def read_all(path: Path, chunk_bytes: int) -> None:
    _, entries = read_v1(path, chunk_bytes=chunk_bytes)
    for _ in entries():
        pass


def refused(path: Path, chunk_bytes: int = CHUNK_BYTES) -> str:
    """The message with which read_v1, or running its iterator to the end, refuses ``path``."""
    with pytest.raises(MalformedBundle) as info:
        read_all(path, chunk_bytes)
    return str(info.value)


def loads_refused(data: str | bytes) -> str:
    with pytest.raises(MalformedBundle) as info:
        Bundle.loads(data)
    return str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "bundle is empty"),
        ("  \n", "bundle is empty"),
        ("[]", "not a JSON object: it starts with '['"),
        ('"riverseal-bundle"', "not a JSON object"),
        ("nul", "not a JSON object"),
        ("{", "expected a member name (at the end of the file)"),
        ('{"format" "x"}', "expected ':' after member name 'format'"),
        ('{"format": "riverseal-bundle" "version": 1}', "expected ',' or '}' after member"),
        ('{"format": "riverseal-bundle",}', "expected a member name"),
        ("{}", "field 'format' is missing"),
    ],
)
def test_not_a_bundle_object(tmp_path: Path, text: str, message: str) -> None:
    assert message in refused(write(tmp_path, text), 1)
    assert message in refused(write(tmp_path, text))


@pytest.mark.parametrize("chunk", [1, CHUNK_BYTES])
def test_trailing_data_after_the_object_is_refused(tmp_path: Path, chunk: int) -> None:
    text = dump(small_doc())
    assert streamed(write(tmp_path, text + "\n \t\r\n"), chunk)  # whitespace is fine
    for tail in ["x", "{}", "\x00", ",", "}"]:
        message = refused(write(tmp_path, text + tail), chunk)
        assert "data after the top-level object (byte" in message, tail
    # The same after entries that are not the last member (the two-pass path).
    doc = _reordered(small_doc(), ["entries", *HEADER_MEMBERS])
    assert "data after the top-level object" in refused(write(tmp_path, dump(doc) + "]"), chunk)


@pytest.mark.parametrize("chunk", [1, 4, CHUNK_BYTES])
def test_a_truncated_file_is_refused_naming_the_entry(tmp_path: Path, chunk: int) -> None:
    text = dump(small_doc())
    at = text.index('"index": 3')
    message = refused(write(tmp_path, text[: at + 40]), chunk)
    assert message.startswith("entries[3]: not JSON")


def test_an_error_in_the_middle_of_an_entry_names_it(tmp_path: Path) -> None:
    text = dump(small_doc())
    broken = text.replace('"index": 2,', '"index": 2,,', 1)
    message = refused(write(tmp_path, broken))
    assert message.startswith("entries[2]: not JSON: Expecting property name")
    assert "(byte " in message


@pytest.mark.parametrize("chunk", [1, 2, 3, CHUNK_BYTES])
@pytest.mark.parametrize("where", ["header", "entry"])
def test_invalid_utf8_is_refused(tmp_path: Path, chunk: int, where: str) -> None:
    text = dump(small_doc()).encode()
    target = b'"exporter": "riverseal' if where == "header" else b'"sensor\\":\\"ph-1'
    at = text.index(target) + len(target) - 2
    for bad in [b"\xff", b"\xc3", b"\xe2\x80", b"\xed\xa0\x80"]:  # lone, cut, surrogate
        data = text[:at] + bad + text[at:]
        message = refused(write(tmp_path, data), chunk)
        assert "not valid UTF-8 (byte" in message, bad
        assert message.startswith("bundle: member 'exporter'" if where == "header" else "entries[")


def test_nan_and_infinity_are_not_json(tmp_path: Path) -> None:
    for constant in ["NaN", "Infinity", "-Infinity"]:
        text = dump(small_doc()).replace('"index": 1,', f'"index": {constant},', 1)
        message = refused(write(tmp_path, text))
        assert message.startswith(f"entries[1]: not JSON: {constant} is not JSON (byte ")


# --- repeated member names -------------------------------------------------------------------

DUPLICATES = {
    # name: (edit of the dumped small bundle, where the message must point)
    "top level, before entries": (('"origin": ', '"origin": "elsewhere", "origin": '), "bundle"),
    "top level, after entries": (("\n ]\n}\n", '\n ],\n "device": "rs-other"\n}\n'), "bundle"),
    "top level, unknown name twice": (('{\n "format"', '{"x": 1, "x": 2, "format"'), "bundle"),
    "entries after entries": (("\n ]\n}\n", '\n ],\n "entries": []\n}\n'), "bundle"),
    "in an entry": (('"index": 2,', '"index": 2, "index": 3,'), "entries[2]"),
    "in a key": (('"vkey": ', '"vkey": "a+b+c", "vkey": '), "keys[0]"),
    "in an anchor": (('"backend": ', '"backend": "evm:1", "backend": '), "anchors[0]"),
    "in an anchor receipt": (('"journal": ', '"journal": "x", "journal": '), "anchors[0]"),
    "in a consistency proof": (('"size1": ', '"size1": 1, "size1": '), "consistency[0]"),
}


@pytest.mark.parametrize(("edit", "where"), list(DUPLICATES.values()), ids=list(DUPLICATES))
@pytest.mark.parametrize("chunk", [2, CHUNK_BYTES])
def test_a_repeated_member_name_is_refused(
    tmp_path: Path, edit: tuple[str, str], where: str, chunk: int
) -> None:
    old, new = edit
    text = dump(small_doc())
    assert old in text
    text = text.replace(old, new, 1)
    message = refused(write(tmp_path, text), chunk)
    assert message.startswith(f"{where}: duplicate member name "), message
    # Bundle.loads refuses the same bytes: no reader keeps either copy.
    assert "duplicate member name" in loads_refused(text.encode())


# --- format and version -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("literal", "message"),
    [
        ("true", "version True is not the integer 1"),
        ("1.0", "version 1.0 is not the integer 1"),
        ("1e0", "version 1.0 is not the integer 1"),
        ('"1"', "version '1' is not the integer 1"),
        ("null", "version None is not the integer 1"),
        ("[1]", "version [1] is not the integer 1"),
        ("2", "version 2 is not 1; a newer ledger-verify may read it"),
        ("0", "version 0 is not 1"),
    ],
)
def test_version_must_be_the_integer_1(tmp_path: Path, literal: str, message: str) -> None:
    text = dump(small_doc()).replace('"version": 1,', f'"version": {literal},', 1)
    assert message in refused(write(tmp_path, text))
    assert message in loads_refused(text)
    assert message in loads_refused(text.encode())


def test_version_after_the_entries_is_checked_too(tmp_path: Path) -> None:
    doc = _reordered(small_doc(), [*[m for m in HEADER_MEMBERS if m != "version"], "entries"])
    text = dump(doc)[: -len("\n}\n")] + ',\n "version": true\n}\n'
    assert "version True is not the integer 1" in refused(write(tmp_path, text))


@pytest.mark.parametrize("value", ["riverseal-bundle-2", None, 1])
def test_a_wrong_format_is_refused(tmp_path: Path, value: Any) -> None:
    doc = small_doc()
    doc["format"] = value
    assert f"format is {value!r}, not 'riverseal-bundle'" in refused(write(tmp_path, dump(doc)))


@pytest.mark.parametrize("member", REQUIRED)
def test_a_missing_member_is_refused(tmp_path: Path, member: str) -> None:
    doc = small_doc()
    del doc[member]
    assert refused(write(tmp_path, dump(doc))) == f"bundle: field {member!r} is missing"


@pytest.mark.parametrize(
    ("member", "value", "message"),
    [
        ("origin", 5, "bundle: field 'origin' has the wrong type"),
        ("device", None, "bundle: field 'device' has the wrong type"),
        ("exported", ["x"], "bundle: field 'exported' has the wrong type"),
        ("keys", {}, "bundle: field 'keys' has the wrong type"),
        ("entries", "none", "bundle: field 'entries' has the wrong type"),
        ("checkpoints", ["ok", 7], "checkpoints[1]: checkpoints must be signed-note strings"),
        ("keys", [{"vkey": 1}], "keys[0]: field 'vkey' has the wrong type"),
        ("anchors", [{}], "anchors[0]: field 'digest' is missing"),
        (
            "consistency",
            [{"size1": 1, "size2": 2, "proof": ["!"]}],
            "consistency[0].proof: not valid base64",
        ),
    ],
)
def test_members_of_the_wrong_type_are_refused_as_bundle_from_json_does(
    tmp_path: Path, member: str, value: Any, message: str
) -> None:
    doc = small_doc()
    doc[member] = value
    assert message in refused(write(tmp_path, dump(doc)))
    assert message.split(": ", 1)[1] in loads_refused(dump(doc))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("index", "3", "entries[3]: field 'index' has the wrong type"),
        ("index", True, "entries[3]: field 'index' has the wrong type"),
        ("entry", None, "entries[3]: field 'entry' has the wrong type"),
        ("checkpoint", 1.5, "entries[3]: field 'checkpoint' has the wrong type"),
        ("inclusion", ["AA=="[:3]], "entries[3].inclusion: not valid base64"),
    ],
)
def test_a_malformed_entry_is_refused_naming_its_position(
    tmp_path: Path, field: str, value: Any, message: str
) -> None:
    doc = small_doc()
    doc["entries"][3][field] = value
    assert message in refused(write(tmp_path, dump(doc)), 3)
    assert message in loads_refused(dump(doc))


def test_entry_text_with_a_lone_surrogate_is_refused(tmp_path: Path) -> None:
    text = dump(small_doc()).replace('"entry": "{', '"entry": "\\ud800{', 1)
    assert "entries[0]: entry text is not valid Unicode" in refused(write(tmp_path, text))


def test_a_value_too_long_for_the_buffer_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bundle_v1_stream, "MAX_VALUE_CHARS", 4096)
    doc = small_doc()
    assert streamed(write(tmp_path, dump(doc)), 100) == Bundle.from_json(doc)
    doc["entries"][2]["x-padding"] = "p" * 10_000
    message = refused(write(tmp_path, dump(doc)), 100)
    assert message.startswith("entries[2]: a single value longer than 4096 characters")


def test_a_file_changed_after_its_header_was_read_is_refused(tmp_path: Path) -> None:
    doc = small_doc()
    path = write(tmp_path, dump(doc))
    _, entries = read_v1(path)
    doc["entries"] = doc["entries"][:4]
    path.write_text(dump(doc), encoding="utf-8")
    with pytest.raises(MalformedBundle, match="changed since its header was read"):
        next(entries())


# --- nesting -----------------------------------------------------------------------------------


def _nested(levels: int) -> str:
    return "[" * levels + "]" * levels


def _with_deep_member(doc_text: str, levels: int, *, inside_entry: bool, last: bool) -> str:
    if inside_entry:
        return doc_text.replace('"index": 2,', f'"index": 2, "x-deep": {_nested(levels)},', 1)
    if last:
        return doc_text[: -len("\n}\n")] + f',\n "x-deep": {_nested(levels)}\n}}\n'
    return '{"x-deep": ' + _nested(levels) + ", " + doc_text.lstrip()[1:]


@pytest.mark.parametrize(
    ("inside_entry", "last", "base"),
    [(False, False, 1), (False, True, 1), (True, False, 3)],
    ids=["top level first", "top level after entries", "inside an entry"],
)
def test_nesting_up_to_the_limit_reads_and_deeper_is_refused(
    tmp_path: Path, inside_entry: bool, last: bool, base: int
) -> None:
    """``base`` is the depth of the object holding the member (the bundle is 1)."""
    text = dump(small_doc())
    expected = Bundle.loads(text)
    at_limit = _with_deep_member(text, MAX_NESTING - base, inside_entry=inside_entry, last=last)
    assert streamed(write(tmp_path, at_limit), 7) == expected
    assert Bundle.loads(at_limit) == expected
    for levels in [MAX_NESTING - base + 1, 900, 100_000]:
        deep = _with_deep_member(text, levels, inside_entry=inside_entry, last=last)
        for chunk in [7, CHUNK_BYTES]:
            message = refused(write(tmp_path, deep), chunk)
            assert f"deeper than {MAX_NESTING}" in message
            where = "entries[2]" if inside_entry else "x-deep[0]"
            assert message.startswith(where), message
        assert f"deeper than {MAX_NESTING}" in loads_refused(deep)
        assert f"deeper than {MAX_NESTING}" in loads_refused(deep.encode())


def test_a_deep_non_array_member_is_refused(tmp_path: Path) -> None:
    text = dump(small_doc())
    deep = '{"x-deep": ' + '{"a":' * 500 + "1" + "}" * 500 + ", " + text.lstrip()[1:]
    assert refused(write(tmp_path, deep)).startswith("bundle: member 'x-deep': nests")
    assert "deeper than" in loads_refused(deep)


def _deep_list(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "limit", "exceeds"),
    [
        ([], 1, False),
        ([[]], 1, True),
        ({"a": [1, {"b": []}]}, 4, False),
        ({"a": [1, {"b": []}]}, 3, True),
        ("[[[[[", 0, False),  # a string is no nesting, whatever it holds
        (7, 0, False),
        ([1, "x", None, {"a": {}}], 3, False),
        (_deep_list(100_000), MAX_NESTING, True),  # iterative: no RecursionError
        (_deep_list(MAX_NESTING), MAX_NESTING, False),
    ],
)
def test_nesting_exceeds(value: Any, limit: int, exceeds: bool) -> None:
    assert nesting_exceeds(value, limit) is exceeds


# --- bounded memory ------------------------------------------------------------------------------

_MEASURE = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path
    from ledger_client.bundle_v1_stream import read_v1

    def peak_kib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    header, entries = read_v1(Path(sys.argv[1]))
    before = peak_kib()
    count, first, last = 0, None, None
    for entry in entries():
        count += 1
        first = first or entry
        last = entry
    print(json.dumps({
        "before_kib": before, "after_kib": peak_kib(), "count": count,
        "same": first == last, "checkpoints": len(header.checkpoints),
    }))
    """
)


def _write_big_bundle(path: Path, entries: int) -> int:
    """The fixture's header, then one of its entries repeated: cheap, and shaped like a real one."""
    doc = fixture_doc()
    entry = doc.pop("entries")[300]
    entry["inclusion"] = entry["inclusion"] * 2  # as long as a proof in a large log
    one = textwrap.indent(json.dumps(entry, indent=1, ensure_ascii=False), "  ")
    head = json.dumps(doc, indent=1, ensure_ascii=False)
    block = ",\n".join([one] * 1000)
    with path.open("w", encoding="utf-8") as f:
        f.write(head[: -len("\n}")] + ',\n "entries": [\n')
        for i in range(entries // 1000):
            f.write(",\n" + block if i else block)
        f.write("\n ]\n}\n")
    return path.stat().st_size


def test_streaming_a_large_bundle_takes_little_memory(tmp_path: Path) -> None:
    n = 200_000
    path = tmp_path / "big.json"
    size = _write_big_bundle(path, n)
    assert size > 200 * 1024**2
    # A fresh interpreter, so that the peak resident size is this reader's alone.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    got = json.loads(out.stdout)
    assert got["count"] == n
    assert got["same"] is True
    growth_mib = (got["after_kib"] - got["before_kib"]) / 1024
    print(f"{size / 1024**2:.0f} MiB bundle: peak RSS grew {growth_mib:.1f} MiB while streaming")
    assert growth_mib < 50, f"{growth_mib:.1f} MiB for a {size / 1024**2:.0f} MiB file"
