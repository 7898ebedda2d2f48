"""Trust files."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ledger_client import errors
from ledger_client.note import Signer
from ledger_client.trust import MalformedTrust, TrustedKey, parse_trust

A = Signer.from_seed("riverseal.example/gw/a", bytes(32)).verifier()
B = Signer.from_seed("riverseal.example/gw/b", bytes(range(32))).verifier()
HASH_NAME = Signer.from_seed("riverseal.example/gw#2", bytes(32)).verifier()  # '#' inside a token


def test_keys_windows_comments_and_blank_lines() -> None:
    text = f"""\ufeff# regulator trust list

key {A.to_vkey()}   # no window
  key {B.to_vkey()} 2026-01-01T00:00:00Z 2026-12-31T23:59:59.999999Z
key {HASH_NAME.to_vkey()} - 2027-01-01T00:00:00Z
"""
    trust = parse_trust(text.encode())
    assert [k.verifier.name for k in trust.keys] == [A.name, B.name, "riverseal.example/gw#2"]
    a, b, c = trust.keys
    assert a == TrustedKey(A)
    assert b.valid_from == datetime(2026, 1, 1, tzinfo=UTC)
    assert b.valid_until == datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert c.valid_from is None
    assert c.valid_until == datetime(2027, 1, 1, tzinfo=UTC)
    assert b.key_id == B.key_id.hex()
    assert b.covers(datetime(2026, 6, 1, tzinfo=UTC))
    assert b.covers(b.valid_until)
    assert b.covers(b.valid_from)
    assert not b.covers(datetime(2025, 12, 31, tzinfo=UTC))
    assert not b.covers(datetime(2027, 1, 1, tzinfo=UTC))
    assert a.covers(datetime(1970, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("key", 1),
        (f"# ok\n\nkeys {A.to_vkey()}\n", 3),
        (f"key {A.to_vkey()}\nevm-sender 0xabc\n", 2),
        ("key not-a-key\n", 1),
        (f"key {A.to_vkey()} yesterday\n", 1),
        (f"key {A.to_vkey()} 2026-01-01T00:00:00Z 2025-01-01T00:00:00Z\n", 1),
        (f"key {A.to_vkey()} - - extra\n", 1),
        (f"key {A.to_vkey()}\n\nkey {A.to_vkey()} 2026-01-01T00:00:00Z\n", 3),
    ],
)
def test_errors_name_the_line(text: str, line: int) -> None:
    with pytest.raises(MalformedTrust, match=f"^line {line}: ") as info:
        parse_trust(text)
    assert info.value.line == line
    assert isinstance(info.value, errors.MalformedError)


@pytest.mark.parametrize("data", ["", "# only comments\n\n", b"\xff\xfe key"])
def test_files_that_trust_nothing_are_errors(data: str | bytes) -> None:
    with pytest.raises(MalformedTrust):
        parse_trust(data)
