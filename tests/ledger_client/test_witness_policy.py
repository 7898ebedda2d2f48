"""Trust-file witness lines and step 5's k-of-n witness policy (pure, v1 bundles)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from ledger_client.bundle import Bundle
from ledger_client.cli import EXIT_FAILED, EXIT_UNDATED, main
from ledger_client.note import split_note
from ledger_client.trust import MalformedTrust, parse_trust
from ledger_client.verify import Level, verify_bundle
from ledger_client.witness import WitnessSigner, cosign
from tests.ledger_client.lc_bundles import NOW, BundleMaker

W1 = WitnessSigner.generate("witness.regulator.example/w1")
W2 = WitnessSigner.generate("witness.other.example/w2")
T = 1_780_000_000


def cosigned(bundle: Bundle, *witnesses: WitnessSigner, skip: int | None = None) -> Bundle:
    """The bundle with each checkpoint cosigned by ``witnesses`` (but not checkpoint ``skip``)."""
    notes = []
    for i, note in enumerate(bundle.checkpoints):
        body = split_note(note)[0]
        who = witnesses if i != skip else witnesses[:1]
        notes.append(note + "".join(cosign(w, body, T + i) for w in who))
    return dataclasses.replace(bundle, checkpoints=tuple(notes))


def trust_text(maker: BundleMaker, policy: str = "") -> str:
    return (
        f"key {maker.signer.verifier().to_vkey()}\n"
        f"witness {W1.key.to_vkey()}\nwitness {W2.key.to_vkey()}  # a second organisation\n"
        + policy
    )


def test_trust_file_witness_lines(maker: BundleMaker) -> None:
    trust = parse_trust(trust_text(maker))
    assert trust.witnesses == (W1.key, W2.key) and trust.witness_policy == 2
    assert parse_trust(trust_text(maker, "witness-policy 1\n")).witness_policy == 1
    assert parse_trust(f"key {maker.signer.verifier().to_vkey()}\n").witness_policy == 0


@pytest.mark.parametrize(
    ("extra", "line", "why"),
    [
        ("witness-policy 3\n", 4, "more witnesses than the 2 listed"),
        ("witness-policy 1\nwitness-policy 1\n", 5, "already set on line 4"),
        ("witness-policy 0\n", 4, "not a positive decimal"),
        (f"witness {W1.key.to_vkey()}\n", 4, "already listed on line 2"),
        ("witness riverseal.example/gw/x+00000000+AQ==\n", 4, "witness key"),
    ],
)
def test_trust_file_witness_errors(maker: BundleMaker, extra: str, line: int, why: str) -> None:
    with pytest.raises(MalformedTrust, match=why) as info:
        parse_trust(trust_text(maker) + extra)
    assert info.value.line == line


def test_a_log_key_is_not_a_witness_key(maker: BundleMaker) -> None:
    with pytest.raises(MalformedTrust, match="type 0x04"):
        parse_trust(f"witness {maker.signer.verifier().to_vkey()}\n")


def test_policy_passes_with_both_and_fails_naming_the_missing(
    maker: BundleMaker, bundle: Bundle
) -> None:
    trust = parse_trust(trust_text(maker))
    plain = verify_bundle(bundle, trust, now=NOW)
    assert plain.level is Level.FAILED
    assert {f.checkpoint for f in plain.failures} == {20, 45, 62}
    ok = verify_bundle(cosigned(bundle, W1, W2), trust, now=NOW)
    assert ok.failures == () and ok.level is not Level.FAILED
    assert any("2 of 2 trusted witness" in n for n in ok.notes)
    short = verify_bundle(cosigned(bundle, W1, W2, skip=1), trust, now=NOW)
    assert [(f.check, f.checkpoint) for f in short.failures] == [("checkpoint", 45)]
    reason = short.failures[0].reason
    assert "checkpoint 45 has 1 valid witness cosignature(s)" in reason
    assert W2.key.to_vkey() in reason and W1.key.to_vkey() not in reason
    # 1 of 2 is enough for a policy of 1
    one = verify_bundle(
        cosigned(bundle, W1, W2, skip=1),
        parse_trust(trust_text(maker, "witness-policy 1\n")),
        now=NOW,
    )
    assert one.failures == ()
    # Without a policy the cosignature lines are just unknown signatures: ignored.
    assert (
        verify_bundle(
            cosigned(bundle, W1), parse_trust(f"key {maker.signer.verifier().to_vkey()}\n"), now=NOW
        ).failures
        == ()
    )


def test_a_bad_cosignature_by_a_trusted_witness_fails(maker: BundleMaker, bundle: Bundle) -> None:
    good = cosigned(bundle, W1, W2)
    note = good.checkpoints[0]
    body = split_note(note)[0]
    forged = note.replace(cosign(W2, body, T), cosign(W2, body.replace("\n20\n", "\n21\n"), T))
    assert forged != note
    bad = dataclasses.replace(good, checkpoints=(forged, *good.checkpoints[1:]))
    report = verify_bundle(bad, parse_trust(trust_text(maker, "witness-policy 1\n")), now=NOW)
    assert [f.reason for f in report.failures] == [
        f"checkpoint 20: cosignature by {W2.name} does not verify"
    ]


def test_ledger_verify_cli_exit_codes(
    maker: BundleMaker,
    bundle: Bundle,
    tmp_path: Path,
    write_bundle: Callable[[Bundle], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    trust = tmp_path / "trust.txt"
    trust.write_text(trust_text(maker, "witness-policy 2\n"))
    both = write_bundle(cosigned(bundle, W1, W2))
    one = write_bundle(cosigned(bundle, W1, W2, skip=2))
    # only a local anchor: authentic, not independently dated, and no failure
    assert main([str(both), "--trust", str(trust)]) == EXIT_UNDATED
    capsys.readouterr()
    assert main([str(one), "--trust", str(trust)]) == EXIT_FAILED
    out = capsys.readouterr().out
    assert "checkpoint 62" in out and W2.key.to_vkey() in out
