"""EVM anchoring without a node: calldata, fees and replacement bumps, signing,
``[[anchor.evm]]`` config, the anchoring key, and the ``evm-sender`` trust directives."""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
import sys
from pathlib import Path

import nacl.signing
import pytest

from gateway.anchoring.evm_tx import (
    AnchorTx,
    FeePolicy,
    Fees,
    bump_fees,
    eth_account,
    initial_fees,
    sign_tx,
)
from gateway.config import parse_config
from gateway.errors import ConfigError, KeyFileError
from gateway.keys import create_anchor_key, load_anchor_key
from ledger_client.evm import (
    CALLDATA_SIZE,
    MalformedCalldata,
    anchor_calldata,
    parse_anchor_calldata,
)
from ledger_client.note import Signer
from ledger_client.trust import MalformedTrust, parse_trust

GWEI = 10**9
Account = eth_account()  # not `import eth_account`: see the recursion-limit test
DIGEST = hashlib.sha256(b"checkpoint body").digest()
VKEY = Signer("riverseal/rs-test", nacl.signing.SigningKey.generate()).verifier().to_vkey()


# --- calldata ---------------------------------------------------------------------------


def test_calldata_layout_is_magic_version_digest_size() -> None:
    data = anchor_calldata(DIGEST, 1_000_003)
    assert len(data) == CALLDATA_SIZE == 45
    assert data[:4] == b"RVSL"
    assert data[4] == 1
    assert data[5:37] == DIGEST
    assert data[37:] == (1_000_003).to_bytes(8, "big")
    assert parse_anchor_calldata(data) == (DIGEST, 1_000_003)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"XVSL" + bytes(41), "magic"),
        (b"RVSL\x02" + bytes(40), "version 2"),
        (b"RVSL", "version None"),
        (anchor_calldata(DIGEST, 5)[:-1], "44"),
        (anchor_calldata(DIGEST, 5) + b"\x00", "46"),
    ],
)
def test_calldata_that_is_not_an_anchor_is_refused(data: bytes, problem: str) -> None:
    with pytest.raises(MalformedCalldata, match=problem):
        parse_anchor_calldata(data)


def test_calldata_refuses_a_short_digest_or_huge_size() -> None:
    with pytest.raises(MalformedCalldata):
        anchor_calldata(DIGEST[:31], 1)
    with pytest.raises(MalformedCalldata):
        anchor_calldata(DIGEST, 2**64)


# --- fees -------------------------------------------------------------------------------

POLICY = FeePolicy.from_gwei(legacy=False, max_fee_gwei=50, max_priority_fee_gwei=2)


def test_first_fees_are_twice_the_base_fee_plus_tip_within_caps() -> None:
    assert initial_fees(POLICY, 10 * GWEI, 1 * GWEI) == Fees(max_fee=21 * GWEI, priority_fee=GWEI)
    # A node suggesting a large tip is capped; a base fee near the cap caps maxFee.
    assert initial_fees(POLICY, 24 * GWEI, 5 * GWEI) == Fees(
        max_fee=50 * GWEI, priority_fee=2 * GWEI
    )
    legacy = FeePolicy.from_gwei(
        legacy=True, max_fee_gwei=1, max_priority_fee_gwei=0, gas_price_gwei=0
    )
    assert initial_fees(legacy, None, 0) == Fees(gas_price=0)


def test_a_replacement_raises_both_fees_by_the_bump_and_stops_at_the_caps() -> None:
    old = Fees(max_fee=20 * GWEI, priority_fee=GWEI)
    low_now = Fees(max_fee=GWEI, priority_fee=GWEI // 2)
    new = bump_fees(POLICY, old, low_now)
    assert new is not None
    assert new.max_fee >= old.max_fee * 1.125
    assert new.priority_fee >= old.priority_fee * 1.125
    # If the market moved above the bump, the replacement follows the market.
    high_now = Fees(max_fee=40 * GWEI, priority_fee=GWEI)
    assert bump_fees(POLICY, old, high_now) == Fees(max_fee=40 * GWEI, priority_fee=1125 * 10**6)
    # Bumping again and again ends at the caps, then there is nothing left to raise.
    fees: Fees | None = old
    seen = []
    while fees is not None:
        seen.append(fees)
        fees = bump_fees(POLICY, fees, low_now)
    assert seen[-1] == Fees(max_fee=50 * GWEI, priority_fee=2 * GWEI)
    assert all(b.max_fee >= a.max_fee for a, b in itertools.pairwise(seen))


def test_free_gas_cannot_be_bumped_but_a_paid_legacy_price_can() -> None:
    free = FeePolicy.from_gwei(legacy=True, max_fee_gwei=0, max_priority_fee_gwei=0)
    assert bump_fees(free, Fees(gas_price=0), Fees(gas_price=0)) is None
    paid = FeePolicy.from_gwei(legacy=True, max_fee_gwei=10, max_priority_fee_gwei=0)
    assert bump_fees(paid, Fees(gas_price=8 * GWEI), Fees(gas_price=0)) == Fees(gas_price=9 * GWEI)
    assert bump_fees(paid, Fees(gas_price=10 * GWEI), Fees(gas_price=0)) is None


def test_fees_round_trip_through_the_receipt_json() -> None:
    for fees in (Fees(max_fee=3, priority_fee=2), Fees(gas_price=0), Fees(gas_price=7)):
        assert Fees.from_json(fees.to_json()) == fees


# --- signing ----------------------------------------------------------------------------


def test_signing_is_deterministic_and_recovers_the_anchoring_address() -> None:
    key = Account.create()
    data = anchor_calldata(DIGEST, 9)
    tx = AnchorTx(1337, 4, key.address, data, 30_000, Fees(max_fee=GWEI, priority_fee=GWEI))
    a, b = sign_tx(tx, bytes(key.key)), sign_tx(tx, bytes(key.key))
    assert a == b  # same fields, same bytes: a dropped transaction is re-sent exactly
    assert a.raw.startswith("0x02")  # EIP-1559 (type 2)
    assert Account.recover_transaction(a.raw) == key.address
    legacy = AnchorTx(1337, 4, key.address, data, 30_000, Fees(gas_price=0))
    signed = sign_tx(legacy, bytes(key.key))
    assert not signed.raw.startswith("0x02")
    assert signed.hash != a.hash
    assert Account.recover_transaction(signed.raw) == key.address


# --- config -----------------------------------------------------------------------------

BASE = '[device]\nkey_file = "device.key"\n'
EVM = """
[[anchor.evm]]
name = "besu"
chain_id = 1337
rpc = ["http://10.0.0.5:8545", "https://node.example:8545"]
fees = "legacy"
finality = "confirmations"
confirmations = 1
"""


def test_evm_tables_are_read_with_documented_defaults(tmp_path: Path) -> None:
    cfg = parse_config(BASE + EVM, tmp_path / "gateway.toml")
    (evm,) = cfg.anchor.evm
    assert evm.backend == "evm:besu"
    assert evm.chain_id == 1337
    assert evm.rpc == ("http://10.0.0.5:8545", "https://node.example:8545")
    assert (evm.fees, evm.finality, evm.confirmations) == ("legacy", "confirmations", 1)
    assert evm.key_file == Path("anchor.key")
    assert evm.to is None
    assert evm.gas_price_gwei == 0.0
    assert evm.replace_after_seconds == 180.0
    assert cfg.anchor.local  # the local journal stays on unless turned off


@pytest.mark.parametrize(
    ("edit", "key", "problem"),
    [
        (("chain_id = 1337", "chain_id = 0"), "anchor.evm[0].chain_id", "must be > 0"),
        (("chain_id = 1337", ""), "anchor.evm[0].chain_id", "required"),
        (('rpc = ["http://10.0.0.5:8545", ', 'rpc = ["ws://x", '), "anchor.evm[0].rpc[0]", "http"),
        (("rpc = [", "rpc = [] #"), "anchor.evm[0].rpc", "at least one"),
        (('fees = "legacy"', 'fees = "cheap"'), "anchor.evm[0].fees", "not one of"),
        (("confirmations = 1", "confirmations = 0"), "anchor.evm[0].confirmations", "> 0"),
        (("confirmations = 1", 'to = "0xdead"'), "anchor.evm[0].to", "40 hex"),
        (("confirmations = 1", "gas = 1"), "anchor.evm[0].gas", "not a known setting"),
        (("confirmations = 1", "fee_bump_percent = 5"), "anchor.evm[0].fee_bump_percent", "10"),
        (('name = "besu"', 'name = "a b"'), "anchor.evm[0].name", "letters"),
    ],
)
def test_broken_evm_tables_name_the_key(
    tmp_path: Path, edit: tuple[str, str], key: str, problem: str
) -> None:
    text = BASE + EVM.replace(*edit)
    with pytest.raises(ConfigError, match=problem) as info:
        parse_config(text, tmp_path / "gateway.toml")
    assert info.value.where == key


def test_two_ledgers_may_not_share_a_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="used by two ledgers") as info:
        parse_config(BASE + EVM + EVM, tmp_path / "gateway.toml")
    assert info.value.where == "anchor.evm[1].name"


# --- the anchoring key ------------------------------------------------------------------


def test_anchoring_key_is_private_never_overwritten_and_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "anchor.key"
    key = create_anchor_key(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert Account.from_key(key.private_key).address == key.address
    assert key.private_key.hex() not in repr(key)
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        create_anchor_key(path)
    assert load_anchor_key(path) == key
    os.chmod(path, 0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_anchor_key(path)


@pytest.mark.parametrize(
    ("text", "problem"), [("0x1234", "64 hex"), ("0x" + "00" * 32, "secp256k1"), ("", "64 hex")]
)
def test_a_broken_anchoring_key_is_refused(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "anchor.key"
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match=problem):
        load_anchor_key(path)
    with pytest.raises(KeyFileError, match="gateway init --anchor-key"):
        load_anchor_key(tmp_path / "missing.key")


# --- trust file -------------------------------------------------------------------------

ADDR = "0x" + "aB" * 20


def test_evm_sender_and_confirmations_directives() -> None:
    trust = parse_trust(
        f"key {VKEY}\n"
        f"evm-sender 1337 {ADDR}  # station 7\n"
        f"evm-sender 1337 0x{'11' * 20}\n"
        f"evm-sender 1 {ADDR}\n"
        "evm-confirmations 1337 3\n"
    )
    assert trust.evm_senders_for(1337) == {ADDR.lower(), "0x" + "11" * 20}
    assert trust.evm_senders_for(1) == {ADDR.lower()}
    assert trust.evm_senders_for(5) == frozenset()
    assert trust.evm_confirmations_for(1337) == 3
    assert trust.evm_confirmations_for(1) is None


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (f"evm-sender {ADDR}", "expected: evm-sender <chain-id> <address>"),
        (f"evm-sender x {ADDR}", "chain id"),
        (f"evm-sender 0 {ADDR}", "chain id"),
        ("evm-sender 1 0x1234", "40 hex"),
        (f"evm-sender 1 {ADDR.lower()}\nevm-sender 1 {ADDR.upper().replace('0X', '0x')}", "line 2"),
        ("evm-confirmations 1", "expected"),
        ("evm-confirmations 1 0", "confirmations"),
        ("evm-confirmations 1 2\nevm-confirmations 1 3", "line 2"),
    ],
)
def test_bad_evm_directives_name_their_line(line: str, problem: str) -> None:
    with pytest.raises(MalformedTrust, match=problem) as info:
        parse_trust(f"key {VKEY}\n{line}\n")
    assert info.value.line is not None and info.value.line >= 2


def test_the_documented_calldata_example_is_what_the_code_makes() -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "anchor-calldata.md"
    text = doc.read_text(encoding="utf-8")
    block = text.split("<!-- calldata-example:start -->")[1].split("<!-- calldata-example:end -->")[
        0
    ]
    hex_digits = "".join(
        line.split()[0] for line in block.splitlines() if line and line[0] in "0123456789abcdef"
    )
    digest = bytes.fromhex("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
    assert bytes.fromhex(hex_digits) == anchor_calldata(digest, 1000)


def test_eth_account_leaves_the_recursion_limit_alone() -> None:
    # py_ecc (imported by eth-account) raises the limit to 100 000 at import; with it a
    # deeply nested JSON payload overflows the C stack (a segfault) instead of raising
    # RecursionError. A fresh interpreter shows the import as the gateway does it.
    probe = (
        "import sys, json\n"
        "before = sys.getrecursionlimit()\n"
        "from gateway.keys import create_anchor_key\n"
        "import tempfile, pathlib\n"
        "create_anchor_key(pathlib.Path(tempfile.mkdtemp()) / 'k')\n"
        "assert sys.getrecursionlimit() == before, sys.getrecursionlimit()\n"
        "try:\n"
        "    json.loads('[' * 200_000)\n"
        "except RecursionError:\n"
        "    print('recursion error')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "recursion error"
