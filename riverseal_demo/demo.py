"""A simulated station end to end, its bundle verified at the top level, in under a minute.

Five simulated Atlas Scientific EZO probes (pH, DO, EC, ORP, temperature)
answer on real pty serial ports, driven by a seeded river model. The gateway
reads them through the same driver a real probe uses, signs and logs every
reading, and signs checkpoints. Each checkpoint is anchored twice: in the
local journal, and to an RFC 3161 timestamp authority over HTTP, whose token
the station checks against the authority's root before recording it. One
probe is made to misbehave on purpose (a burst of line noise and an ``*ER``
reply) to show that bad input is rejected, counted, and costs no good reading.

The timestamp authority is ``simulators.tsa.LocalTsa``: ``openssl ts -reply``
on 127.0.0.1 with a root made for this run. It is a local stand-in for an
independent authority, so the whole path runs on one machine; since this
machine holds its key, its times prove nothing to anyone else. A real
deployment anchors to a TSA or a chain that the box's owner does not control.

Afterwards the demo exports a version 2 bundle (as ``gateway export`` does)
and verifies it in-process with the regulator's verifier
(``ledger_client.verify_source``) given the trust file and the
TSA's root, prints the verdict line ``ledger-verify`` would end with, the
"recorded no later than" bounds the TSA tokens give, and the command that
repeats the check. It writes, under ``--out`` (default ``riverseal-demo/``):
``station/`` (key, config, log, ``trust.txt``; replaced on every run),
``bundle.tar`` and ``tsa-roots.pem`` (the TSA's root, kept so the printed
command works after the TSA has stopped).

Exit status: ledger-verify's for the verdict level, so 0 only when the bundle
is VERIFIED (trusted key, nothing wrong, independently dated by a checked
anchor); 1 when the demo itself could not run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import shutil
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from gateway.config import load_config
from gateway.daemon import Gateway
from gateway.export_v2 import export_bundle_v2
from gateway.keys import create_device_key
from gateway.log import Log
from gateway.store import Store
from ledger_client import Level, Report, parse_trust, verify_source
from ledger_client.cli import exit_status, verdict_line
from ledger_client.tsa import BACKEND_PREFIX, TsaChecker, load_tsa_roots
from simulators.ezo import EzoCircuit
from simulators.ezo_pty import EzoPtyDevice
from simulators.river import RiverModel
from simulators.tsa import LocalTsa, TsaSetupError

__all__ = ["DemoError", "run_demo"]


class DemoError(Exception):
    """The demo itself could not run (not a verdict on its bundle)."""


_MARKER = ".riverseal-demo"
_PROBES = (("ph", "ph-1"), ("do", "do-1"), ("ec", "ec-1"), ("orp", "orp-1"), ("rtd", "temp-1"))
_TSA_NAME = "local-tsa"
_TSA_BACKEND = BACKEND_PREFIX + _TSA_NAME
_MAX_RECORDED_LINES = 6
_MAX_FAILURE_LINES = 10


def _toml_str(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(text)


def _config(devdir: Path, tsa_url: str, tsa_roots: Path) -> str:
    sensors = "".join(
        f'\n[[sensor]]\nid = "{sid}"\ndriver = "ezo"\ncircuit = "{kind}"\n'
        f"port = {_toml_str(str(devdir / f'ezo-{kind}'))}\ninterval_s = 1.0\ntimeout_s = 2.0\n"
        for kind, sid in _PROBES
    )
    return (
        '# written by `riverseal-demo`\n[device]\nkey_file = "device.key"\ndata_dir = "data"\n\n'
        "[log]\ncheckpoint_every_entries = 40\ncheckpoint_every_seconds = 5\n\n"
        "[anchor]\nretry_max_seconds = 2.0\n\n"
        "# The demo's timestamp authority: a local stand-in (simulators/tsa.py) for an\n"
        "# independent one. A real station names a TSA its owner does not control.\n"
        "[[anchor.rfc3161]]\n"
        f'name = "{_TSA_NAME}"\n'
        f"url = {_toml_str(tsa_url)}\n"
        f"roots = {_toml_str(str(tsa_roots))}\n"
        "timeout_s = 5.0\n" + sensors
    )


def _loopback_without_proxy() -> None:
    """The demo's TSA listens on 127.0.0.1: reach it directly even when the environment
    names an HTTP proxy (httpx, which the anchorer uses, honours NO_PROXY)."""
    for name in ("NO_PROXY", "no_proxy"):
        have = os.environ.get(name, "")
        if "127.0.0.1" not in [h.strip() for h in have.split(",")]:
            os.environ[name] = f"{have},127.0.0.1" if have.strip() else "127.0.0.1"


def _prepare(out: Path) -> Path:
    station = out / "station"
    if station.exists():
        if not (station / _MARKER).exists():
            raise DemoError(f"{station} exists and was not made by `riverseal-demo`; choose --out")
        shutil.rmtree(station)
    station.mkdir(parents=True)
    (station / _MARKER).touch()
    return station


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when inside it (as a user typed it)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _verify(bundle: Path, trust: Path, roots: Path) -> Report:
    """What ``ledger-verify BUNDLE --trust TRUST --tsa-roots ROOTS`` finds, in-process."""
    return verify_source(
        bundle,
        parse_trust(trust.read_bytes()),
        now=datetime.now(UTC),
        anchor_checkers=[TsaChecker(load_tsa_roots([roots]))],
        jobs=1,  # a demo bundle is small: no worker processes
    )


async def run_demo(*, seconds: float = 20.0, out: Path = Path("riverseal-demo")) -> int:
    t0 = time.monotonic()
    out = out.resolve()  # noqa: ASYNC240 - once, before anything runs
    station = _prepare(out)
    devdir = station / "dev"
    devdir.mkdir()
    key = create_device_key(station / "device.key")
    trust = station / "trust.txt"
    trust.write_text(f"key {key.vkey}\n")
    roots_copy = out / "tsa-roots.pem"
    config_path = station / "gateway.toml"
    _loopback_without_proxy()
    print(f"riverseal demo: device {key.device_id}, {len(_PROBES)} simulated EZO probes on ptys")

    river = RiverModel(seed=7)
    async with contextlib.AsyncExitStack() as stack:
        try:
            tsa = await stack.enter_async_context(LocalTsa("riverseal demo TSA"))
        except TsaSetupError as exc:
            raise DemoError(str(exc)) from exc
        shutil.copyfile(tsa.roots_pem, roots_copy)
        config_path.write_text(_config(devdir, tsa.url, tsa.roots_pem))
        cfg = load_config(config_path)
        print(f"  timestamp authority (local stand-in, RFC 3161) at {tsa.url}")
        probes = {}
        for i, (kind, sid) in enumerate(_PROBES):
            circuit = EzoCircuit(kind, river, seed=i, delay_scale=0.2)  # type: ignore[arg-type]
            dev = await stack.enter_async_context(EzoPtyDevice(circuit, devdir / f"ezo-{kind}"))
            probes[sid] = dev
            print(f"  {sid:<7} {kind.upper():<4} on {dev.device_path}")

        gw = Gateway(cfg, status_every_s=1.0)
        stop = asyncio.Event()
        run = asyncio.create_task(gw.run(stop), name="demo.gateway")
        await asyncio.wait_for(gw.started.wait(), 10)
        print(f"gateway running for {seconds:.0f} s ...")
        fault_at = t0 + seconds / 3
        faulted = False
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, 5.0))
            if not faulted and time.monotonic() >= fault_at:
                probes["ph-1"].circuit.inject(garbage_next=1, error_next=1)
                faulted = True
            if gw.ingest is not None and left > 1:
                print(
                    f"  t+{seconds - max(left - 5, 0):4.0f} s: {gw.ingest.stats.committed} entries"
                )
        stop.set()
        await run  # the final checkpoint is anchored before the gateway returns
    # The TSA has stopped: what follows needs only the files.
    assert gw.ingest is not None
    assert gw.anchorer is not None
    ingest = gw.ingest
    tsa_error = gw.anchorer.status[_TSA_BACKEND].last_error

    bundle_path = out / "bundle.tar"
    async with Store(cfg.db_path) as store:
        log = Log(store, key)
        await log.open()
        summary = await export_bundle_v2(log, bundle_path)
        anchors = await store.anchors()
    report = await asyncio.to_thread(_verify, bundle_path, trust, roots_copy)

    print("\nreadings per sensor (committed, signed, in the Merkle log):")
    for _kind, sid in _PROBES:
        rejected = {r: n for (s, r), n in ingest.rejected.items() if s == sid}
        note = (
            (", rejected: " + ", ".join(f"{n} {r}" for r, n in rejected.items()))
            if rejected
            else ""
        )
        print(f"  {sid:<7} {ingest.per_sensor[sid]:4d}{note}")
    print(f"log entries:  {report.entries} (readings, and the boot and stop events)")
    print(f"checkpoints:  {len(report.checkpoints)} signed, consistent with each other")
    finals = Counter(a.backend for a in anchors if a.state == "final")
    tokens = finals[_TSA_BACKEND]
    print(
        f"anchors:      {tokens} RFC 3161 token{'' if tokens == 1 else 's'} from the TSA, each "
        "checked against its root\n"
        f"              before it was recorded; {finals['local']} in the local journal"
    )
    if tsa_error and not tokens:
        print(f"              the TSA's last error: {tsa_error}")
    print(
        "              The TSA is a local stand-in for an independent authority: this machine\n"
        "              holds its key, so its times prove nothing to anyone else. A real\n"
        "              deployment anchors to a TSA or chain the box's owner does not control."
    )
    for r in report.recorded_by[:_MAX_RECORDED_LINES]:
        print(f"recorded:     entries {r.first}–{r.last} no later than {r.time} ({r.backend})")
    if (more := len(report.recorded_by) - _MAX_RECORDED_LINES) > 0:
        print(f"              … and {more} more")
    print(
        f"bundle:       {_shown(bundle_path)} (version 2, {summary.bytes:,} bytes, "
        f"{summary.checkpoints} checkpoints, {summary.anchors} anchors)"
    )
    print("verifier:     ledger_client, given the trust file and the TSA's root, says:")
    for note in report.notes:
        print(f"  note: {note}")
    for f in report.failures[:_MAX_FAILURE_LINES]:
        print(f"  {f.described()}")
    print(verdict_line(report))
    command = [
        "ledger-verify",
        _shown(bundle_path),
        "--trust",
        _shown(trust),
        "--tsa-roots",
        _shown(roots_copy),
    ]
    print(f"verify it yourself:  {shlex.join(command)}")
    if report.level is not Level.VERIFIED:
        print(f"not VERIFIED: exit status {exit_status(report.level)}, as ledger-verify's")
    print(f"done in {time.monotonic() - t0:.1f} s")
    return exit_status(report.level)
