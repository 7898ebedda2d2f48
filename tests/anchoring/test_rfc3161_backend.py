"""The rfc3161 backend against the real openssl TSA over HTTP, alone and under the anchorer.

A TSA that fails (HTTP 500, garbage, a token for another imprint or nonce, an
untrusted signer, a refusal, no answer in time) is refused with an error
naming the TSA and what was wrong; nothing is recorded as anchored; and the
anchorer retries it until the TSA recovers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import socket
import time
import uuid
from pathlib import Path

import pytest

from gateway.anchoring.anchorer import Anchorer
from gateway.anchoring.registry import build_backends
from gateway.anchoring.rfc3161 import Rfc3161Backend
from gateway.config import parse_config
from gateway.errors import AnchorError, ConfigError, LedgerRejected, LedgerUnavailable
from gateway.keys import create_device_key
from gateway.log import Log
from gateway.pipeline import Reading, Value
from gateway.store import Store
from ledger_client.bundle import AnchorReceipt
from ledger_client.tsa import TsaChecker, load_tsa_roots
from tests.servers.tsa_server import TestTsa, rfc3161_toml

DIGEST = hashlib.sha256(b"a checkpoint body\n").digest()

# fault → (error class, what the message must say)
FAILURES: dict[str, tuple[type[AnchorError], str]] = {
    "http500": (LedgerUnavailable, r"HTTP 500 Internal Server Error"),
    "garbage": (LedgerUnavailable, r"is not an RFC 3161 TimeStampResp"),
    "other-imprint": (LedgerUnavailable, r"token is for another imprint"),
    "other-nonce": (LedgerUnavailable, r"token's nonce \d+ is not ours"),
    "untrusted": (
        LedgerRejected,
        r"certificate chain does not verify \(unable to get local issuer certificate\)",
    ),
    "rejection": (LedgerRejected, r"did not grant: status rejection \(not today, sadly\)"),
    "slow": (LedgerUnavailable, r"no reply within 0.3 s"),
}


def backend(tsa: TestTsa, url: str, name: str = "t1") -> Rfc3161Backend:
    return Rfc3161Backend(name, url, load_tsa_roots([tsa.roots]), timeout_s=0.3)


async def test_a_token_is_final_on_receipt_and_verifies(tsa: TestTsa) -> None:
    key = f"ok-{uuid.uuid4().hex}"
    b = backend(tsa, tsa.url("tsa", first=0, key=key))
    try:
        progress = await b.submit(DIGEST, 7)
        assert progress.state == "final"
        receipt = dict(progress.receipt)
        assert set(receipt) == {"tsa", "url", "gen_time", "token"}
        assert receipt["tsa"] == "t1"
        assert receipt["url"] == b.url
        assert tsa.hits[key] == 1
        # polling a final receipt re-checks it locally: no second request
        assert (await b.poll(DIGEST, receipt)).receipt == receipt
        assert tsa.hits[key] == 1
        # an attempt that got no token asks the TSA again
        again = await b.poll(DIGEST, {})
        assert again.state == "final"
        assert again.receipt["token"] != receipt["token"]  # new nonce, new serial
        assert tsa.hits[key] == 2
    finally:
        await b.aclose()
    evidence = TsaChecker(load_tsa_roots([tsa.roots])).check(
        AnchorReceipt(7, "rfc3161:t1", DIGEST, "final", receipt)
    )
    assert evidence.time.tzinfo is not None
    assert abs(evidence.time.timestamp() - time.time()) < 120  # the TSA's clock is ours
    assert receipt["gen_time"].startswith(evidence.time.strftime("%Y-%m-%dT%H:%M:%S"))


@pytest.mark.parametrize("fault", sorted(FAILURES))
async def test_each_bad_answer_is_refused_with_a_clear_error(tsa: TestTsa, fault: str) -> None:
    error, message = FAILURES[fault]
    b = backend(tsa, tsa.url(fault), name=f"bad-{fault}")
    try:
        with pytest.raises(error, match=message) as caught:
            await b.submit(DIGEST, 1)
    finally:
        await b.aclose()
    assert str(caught.value).startswith(f"TSA bad-{fault} ({tsa.url(fault)}): ")


async def test_unreachable_and_wrong_urls(tsa: TestTsa) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/tsr"
    b = backend(tsa, closed)
    with pytest.raises(LedgerUnavailable, match="ConnectError"):
        await b.submit(DIGEST, 1)
    await b.aclose()
    b = backend(tsa, f"{tsa.base_url}/no-such-path")
    with pytest.raises(LedgerRejected, match="HTTP 404"):
        await b.submit(DIGEST, 1)
    await b.aclose()


def reading(t_ns: int) -> Reading:
    return Reading("probe-1", (Value("temperature", 11.5, "Cel"),), t_ns)


@pytest.mark.parametrize("fault", sorted(FAILURES))
async def test_a_failing_tsa_records_nothing_and_is_retried_until_it_recovers(
    tsa: TestTsa, tmp_path: Path, fault: str
) -> None:
    key = f"{fault}-{uuid.uuid4().hex}"
    b = backend(tsa, tsa.url(fault, first=2, key=key), name="flaky")
    _, message = FAILURES[fault]
    async with Store(tmp_path / "log.sqlite") as store:
        log = Log(store, create_device_key(tmp_path / "device.key"))
        await log.open()
        await log.append([reading(time.time_ns())], checkpoint=True)
        anchorer = Anchorer(store, [b], retry_max_seconds=0.05)
        st = anchorer.status["rfc3161:flaky"]
        for attempt in (1, 2):
            await anchorer.step()
            assert st.failures == attempt
            assert st.last_error is not None
            assert st.last_error.startswith("TSA flaky (http://")
            assert re.search(message, st.last_error), st.last_error
            rows = await store.anchors("rfc3161:flaky")
            assert all(r.state != "final" for r in rows)
            assert all("token" not in json.loads(r.receipt) for r in rows)
            assert st.last_final is None
            await asyncio.sleep(0.06)  # past the capped back-off
        await anchorer.step()  # the TSA has recovered
        rows = await store.anchors("rfc3161:flaky")
        await b.aclose()
    assert tsa.hits[key] == 3
    assert [(r.checkpoint, r.state) for r in rows] == [(1, "final")]
    assert "token" in json.loads(rows[0].receipt)
    assert st.last_error is None
    assert st.last_final == 1


def test_config_builds_one_backend_per_tsa(tsa: TestTsa, tmp_path: Path) -> None:
    text = (
        "[device]\n[anchor]\nretry_max_seconds = 5\n"
        + rfc3161_toml(tsa, "tsa-a")
        + rfc3161_toml(tsa, "tsa-b", required=False, timeout_s=2.5)
    )
    cfg = parse_config(text, tmp_path / "gateway.toml")
    backends = build_backends(cfg)
    assert [b.name for b in backends] == ["local", "rfc3161:tsa-a", "rfc3161:tsa-b"]
    tsa_b = backends[2]
    assert isinstance(tsa_b, Rfc3161Backend)
    assert (tsa_b.required, tsa_b.timeout_s, tsa_b.url) == (False, 2.5, tsa.url())


@pytest.mark.parametrize(
    ("table", "where", "problem"),
    [
        ('name = "a"\nurl = "http://x"', "rfc3161[0].roots", "required but missing"),
        ('name = "a"\nurl = "ftp://x"\nroots = "/r.pem"', "rfc3161[0].url", "http"),
        ('name = "a b"\nurl = "http://x"\nroots = "/r.pem"', "rfc3161[0].name", "must be"),
        ('name = "a"\nurl = "http://x"\nroots = "r.pem"', "rfc3161[0].roots", "absolute"),
        ('name = "a"\nurl = "http://x"\nroots = "/r"\ntimeout_s = 0', "timeout_s", "> 0"),
        ('name = "a"\nurl = "http://x"\nroots = "/r"\nrequired = "yes"', "required", "bool"),
        ('name = "a"\nurl = "http://x"\nroots = "/r"\nroot = "/r"', "rfc3161[0].root", "known"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, table: str, where: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        parse_config(f"[device]\n[[anchor.rfc3161]]\n{table}\n", tmp_path / "g.toml")
    assert where in caught.value.where


def test_config_refuses_two_tsas_of_one_name(tmp_path: Path) -> None:
    one = '[[anchor.rfc3161]]\nname = "a"\nurl = "http://x"\nroots = "/r.pem"\n'
    with pytest.raises(ConfigError, match="used by two TSAs") as caught:
        parse_config("[device]\n" + one + one, tmp_path / "g.toml")
    assert caught.value.where == "anchor.rfc3161[1].name"


def test_unreadable_roots_refuse_the_start(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    for roots, problem in ((missing, "cannot read TSA roots"), (not_pem, "not PEM certificates")):
        cfg = parse_config(
            f'[device]\n[[anchor.rfc3161]]\nname = "a"\nurl = "http://x"\nroots = "{roots}"\n',
            tmp_path / "g.toml",
        )
        with pytest.raises(ConfigError, match=problem) as caught:
            build_backends(cfg)
        assert caught.value.where.endswith("anchor.rfc3161[0].roots")
