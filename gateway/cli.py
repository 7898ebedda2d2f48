"""``gateway``: the technician's command line.

Every command catches only GatewayError (and the verifier's base error) and
prints a diagnosis a technician can act on; exit status 1 means it failed,
2 means it was called wrongly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ledger_client.errors import LedgerClientError
from ledger_client.records import format_time, parse_time

from .config import GatewayConfig, load_config
from .errors import ConfigError, GatewayError, KeyFileError, StoreError
from .keys import create_anchor_key, create_device_key

__all__ = ["main"]

CONFIG_TEMPLATE = """\
# riverseal gateway configuration ({device_id})
#
# Paths are relative to this file. Check it with: gateway check --config {name}

[device]
key_file = "device.key"     # Ed25519 device key (mode 0600); never replace it silently
data_dir = "data"           # the log database and the local anchor journal

[log]
checkpoint_every_entries = 1000   # sign a checkpoint after this many new entries
checkpoint_every_seconds = 60     # ...or after this long, whichever comes first

[anchor.local]
enabled = true              # journal checkpoint digests on the box (not independent evidence)

# An Ethereum JSON-RPC chain to anchor checkpoints to (uncomment to use; needs the
# anchoring key from `gateway init --anchor-key`). See docs/anchor-calldata.md.
# [[anchor.evm]]
# name = "regional"          # anchors are labelled "evm:regional"
# chain_id = 1337            # an endpoint on another chain is refused
# rpc = ["http://10.0.0.5:8545", "http://10.0.0.6:8545"]   # tried in order
# key_file = "anchor.key"
# fees = "legacy"            # free-gas Besu/Quorum; "eip1559" (default) elsewhere
# finality = "confirmations" # QBFT/IBFT 2.0: final in its block; "auto" uses the finalized tag
# confirmations = 1

# An MQTT broker for sensor nodes (uncomment to use):
# [mqtt]
# host = "127.0.0.1"
# port = 1883

# One [[sensor]] table per probe. Name serial ports by /dev/serial/by-id/... so a
# replugged adapter keeps its name.
#
# [[sensor]]
# id = "ph-1"
# driver = "ezo"             # Atlas Scientific EZO circuit over UART
# circuit = "ph"             # ph, do, ec, orp or rtd
# port = "/dev/serial/by-id/usb-FTDI_FT230X_Basic_UART_XXXXXXXX-if00-port0"
# baudrate = 9600
# interval_s = 10
#
# [[sensor]]
# id = "node-7"
# driver = "mqtt"            # JSON payloads, see docs/mqtt-payloads.md
# topic = "riverseal/site1/node7"
# interval_s = 60
"""


def _parse_time(text: str) -> int:
    try:
        dt = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError("--since/--until", f"{text!r} is not an ISO 8601 time") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1_000_000_000)


def cmd_init(args: argparse.Namespace) -> int:
    target: Path = args.dir
    config_path = target / "gateway.toml"
    if config_path.exists():
        raise ConfigError(str(config_path), "already exists; refusing to overwrite it")
    anchor_path = target / "anchor.key"
    if args.anchor_key and anchor_path.exists():
        raise KeyFileError(f"{anchor_path} already exists; refusing to overwrite an anchoring key")
    key = create_device_key(target / "device.key")
    trust = (
        f"# Register this device with the regulator: the device's verifier key.\nkey {key.vkey}\n"
    )
    anchor = create_anchor_key(anchor_path) if args.anchor_key else None
    if anchor is not None:
        trust += (
            "# ...and the address that signs its EVM anchors (put the chain id of the\n"
            "# [[anchor.evm]] ledger in place of <chain-id>):\n"
            f"# evm-sender <chain-id> {anchor.address}\n"
        )
    config_path.write_text(CONFIG_TEMPLATE.format(device_id=key.device_id, name=config_path))
    (target / "trust.txt").write_text(trust)
    print(f"device id:    {key.device_id}")
    print(f"verifier key: {key.vkey}")
    made = f"{target / 'device.key'} (mode 0600)"
    if anchor is not None:
        print(f"anchoring address: {anchor.address}")
        made += f", {anchor_path} (mode 0600)"
    print(f"created {made}, {config_path} and {target / 'trust.txt'}")
    print("Send the verifier key (or trust.txt) to the regulator; keep device.key on the box.")
    if anchor is not None:
        print(
            "Fund the anchoring address on the chain (unless it is free-gas) and register it "
            "with the regulator as evm-sender."
        )
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Every problem of the config at once (exit 2), then with --probe what answers (exit 1)."""
    from .check import (
        EXIT_CONFIG,
        EXIT_OK,
        EXIT_PROBE,
        local_problems,
        print_outcomes,
        print_problems,
        probe_all,
    )
    from .drivers import driver_for
    from .errors import ConfigProblems
    from .keys import load_device_key
    from .toml_table import read_text

    shown = str(args.config)
    try:
        cfg = load_config(args.config, checking=True)
    except ConfigProblems as exc:
        # The file's problems, and what this machine says of what could be read.
        found = list(exc.problems)
        if exc.partial is not None:
            found += local_problems(exc.partial, exc.sensor_rows)
        print_problems(shown, read_text(args.config), found, sys.stdout)
        errors = sum(p.severity == "error" for p in found)
        print(f"{shown}: {errors} error(s), {len(found) - errors} warning(s)")
        return EXIT_CONFIG
    except ConfigError as exc:  # the file cannot be read at all
        print(f"{exc}")
        return EXIT_CONFIG
    problems = [*cfg.warnings, *local_problems(cfg)]
    print_problems(shown, read_text(args.config), problems, sys.stdout)
    errors = sum(p.severity == "error" for p in problems)
    if errors:
        print(f"{shown}: {errors} error(s), {len(problems) - errors} warning(s)")
    else:
        device = load_device_key(cfg.key_file).device_id
        warned = f", {len(problems)} warning(s)" if problems else ""
        print(f"{shown}: OK — device {device}, {len(cfg.sensors)} sensors{warned}")
        for s in cfg.sensors:
            driver = driver_for(s)
            print(f"  {s.id:<16} {driver.name:<5} {driver.where(s)}")
    if not args.probe:
        return EXIT_CONFIG if errors else EXIT_OK
    print("probe:")
    outcomes = asyncio.run(probe_all(cfg))
    mqtt_sensors = sum(driver_for(s).name == "mqtt" for s in cfg.sensors)
    print_outcomes(outcomes, mqtt_sensors, sys.stdout)
    failed = sum(not o.ok for o in outcomes)
    if errors:
        return EXIT_CONFIG
    if failed:
        print(f"{shown}: {failed} of {len(outcomes)} probe(s) failed")
        return EXIT_PROBE
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from .daemon import Gateway
    from .lock import hold_data_dir
    from .notify import Notifier
    from .rotate import finish_interrupted_rotation

    cfg = load_config(args.config)

    async def go() -> None:
        await finish_interrupted_rotation(cfg.key_file, cfg.db_path)  # before the key is read
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Gateway(cfg, notifier=Notifier.from_environment()).run(stop)

    # One daemon per data directory: refused here, before anything is read or written.
    with hold_data_dir(cfg.data_dir, "gateway run", cfg.path):
        asyncio.run(go())
    return 0


def cmd_rotate_key(args: argparse.Namespace) -> int:
    from .rotate import print_rotation, refuse_if_running, rotate_device_key

    cfg = load_config(args.config, secrets=False)
    refuse_if_running(cfg.data_dir)
    result = asyncio.run(rotate_device_key(cfg.key_file, cfg.db_path))
    print_rotation(result, cfg.key_file, sys.stdout)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .evidence import build_evidence, reading_at
    from .export import export_bundle_v1
    from .export_v2 import export_bundle_v2
    from .keys import load_device_key
    from .log import Log
    from .retention import EXPORTED_META, record_copy
    from .store import Store

    proof = args.proof is not None or args.proof_sensor is not None
    usage = None
    if (args.proof_sensor is None) != (args.proof_time is None):
        usage = "--proof-sensor and --proof-time go together"
    elif proof and (args.since or args.until or args.sensor or args.format):
        usage = "--proof writes one entry's evidence: no --since, --until, --sensor or --format"
    elif args.sensor and args.format == "v1":
        usage = "--sensor needs the v2 format"
    if usage is not None:
        print(f"gateway export: {usage}", file=sys.stderr)
        return 2
    cfg = load_config(args.config, secrets=False)
    since = _parse_time(args.since) if args.since else None
    until = _parse_time(args.until) if args.until else None
    at = None
    if args.proof_time:
        try:
            at = _parse_time(args.proof_time)
        except ConfigError as exc:
            raise ConfigError("--proof-time", exc.problem) from exc
    out: Path = args.out

    def replace_out(data: bytes) -> None:
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(out)

    async def go() -> str:
        key = load_device_key(cfg.key_file)
        if not cfg.db_path.exists():  # never made here: an export reads a log
            raise StoreError(f"no log database at {cfg.db_path}")
        async with Store(cfg.db_path) as store:
            log_ = Log(store, key)
            await log_.open()
            if proof:
                index: int = args.proof
                if at is not None:
                    index = await reading_at(store, args.proof_sensor, at)
                data = (await build_evidence(log_, index)).dumps()
                replace_out(data)
                return f"evidence for entry {index}, {len(data)} bytes"
            if args.format == "v1":
                v1 = await export_bundle_v1(log_, out, since_ns=since, until_ns=until)
                return f"{v1.entries} entries, {v1.checkpoints} checkpoints, {v1.anchors} anchors"
            summary = await export_bundle_v2(
                log_, out, since_ns=since, until_ns=until, sensors=args.sensor
            )
            if since is None and until is None and not args.sensor:  # the whole log
                await record_copy(store, EXPORTED_META, summary.window.size)
        w = summary.window
        return (
            f"{summary.entries} entries, {summary.bytes} bytes (tree {w.start}–{w.size - 1}, "
            f"{summary.checkpoints} checkpoints, {summary.anchors} anchors)"
        )

    print(f"wrote {out}: {asyncio.run(go())}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from .keys import load_device_key
    from .log import Log
    from .publish import PublishStats, open_target, publish
    from .store import Store

    headers: dict[str, str] = {}
    for text in args.header or []:
        name, sep, value = text.partition(":")
        if not sep or not name.strip():
            raise ConfigError("--header", f"{text!r} is not 'Name: value'")
        headers[name.strip()] = value.strip()
    cfg = load_config(args.config, secrets=False)
    shown = [0.0]

    def progress(stats: PublishStats) -> None:
        now = time.monotonic()
        if now - shown[0] >= 1.0 or stats.files == stats.planned:
            shown[0] = now
            print(
                f"  {stats.files:,}/{stats.planned:,} files, {stats.bytes:,} bytes",
                file=sys.stderr,
            )

    async def go() -> PublishStats:
        key = load_device_key(cfg.key_file)
        async with Store(cfg.db_path) as store, open_target(args.to, headers=headers) as target:
            log_ = Log(store, key)
            await log_.open()
            return await publish(log_, target, progress=progress)

    stats = asyncio.run(go())
    since = f"it had {stats.previous:,}" if stats.previous else "it had none"
    print(
        f"published checkpoint {stats.size:,} to {stats.target} ({since}): "
        f"{stats.files:,} files, {stats.bytes:,} bytes"
    )
    return 0


_STATUS_FRESH_S = 60.0  # the daemon rewrites status.json every few seconds
_STATUS_HTTP_TIMEOUT_S = 2.0


def _status_json(path: Path) -> dict[str, Any] | None:
    """The last status.json the daemon wrote, whether or not it still runs."""
    try:
        doc = json.loads(path.read_text())
        parse_time(doc["time"])
    except (OSError, ValueError, KeyError, TypeError, LedgerClientError):
        return None
    return dict(doc) if isinstance(doc, dict) else None


def _served_status(cfg: GatewayConfig) -> dict[str, Any] | None:
    """The running daemon's document from its status server, if it answers for this data
    directory (another gateway could be listening at that address)."""
    import contextlib
    import ipaddress
    import urllib.error
    import urllib.request

    address = cfg.status.address
    if address is None:
        return None
    host, port = address
    with contextlib.suppress(ValueError):  # a host name is asked as it is
        ip = ipaddress.ip_address(host)
        if ip.is_unspecified:  # listening on every address: ask the loopback one
            host = "127.0.0.1" if ip.version == 4 else "::1"
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/status"
    try:
        with urllib.request.urlopen(url, timeout=_STATUS_HTTP_TIMEOUT_S) as reply:
            doc = json.loads(reply.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None
    if not isinstance(doc, dict) or doc.get("data_dir") != str(cfg.data_dir.resolve()):
        return None
    return doc


def _live_status(cfg: GatewayConfig) -> dict[str, Any] | None:
    """The running daemon's document: asked of its status server, else its status.json
    if the process that wrote it still runs and wrote it lately. status.json is looked
    for in ``$RUNTIME_DIRECTORY`` (run under the unit's environment), then in the data
    directory, where the daemon under systemd leaves a symlink to its runtime copy
    (gateway/daemon.py ``status_file``)."""
    served = _served_status(cfg)
    if served is not None:
        return served
    doc = None
    if runtime := os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]:
        doc = _status_json(Path(runtime) / "status.json")
        if doc is not None and doc.get("data_dir") != str(cfg.data_dir.resolve()):
            doc = None  # another daemon's
    if doc is None:
        doc = _status_json(cfg.data_dir / "status.json")
    if doc is None:
        return None
    pid = doc.get("pid")
    written = parse_time(doc["time"]).timestamp()
    if not isinstance(pid, int) or time.time() - written > _STATUS_FRESH_S:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, run by another user
    doc["running"] = True
    return doc


async def _stored_status(cfg: GatewayConfig) -> dict[str, Any]:
    """What the log database says when no daemon is running."""
    from .anchoring.anchorer import open_anchor_summary
    from .store import Store

    if not cfg.db_path.exists():
        raise GatewayError(f"no log database at {cfg.db_path}: the gateway has never run here")
    names = {"local"} if cfg.anchor.local else set()
    names |= {c.backend for c in cfg.anchor.evm}
    names |= {f"rfc3161:{c.name}" for c in cfg.anchor.rfc3161}
    async with Store(cfg.db_path, readonly=True) as store:
        size = await store.size()
        cp = await store.latest_checkpoint()
        anchors: dict[str, Any] = {}
        for name in sorted(names | set(await store.anchor_backends())):
            rows = await store.open_anchors(name)
            final = await store.last_final_anchor(name)
            errors = [r.last_error for r in rows if r.last_error]
            anchors[name] = {
                "last_final": final.checkpoint if final else None,
                "last_final_at": format_time(final.updated_ns) if final else None,
                "pending": [r.checkpoint for r in rows],
                "open": [open_anchor_summary(r) for r in rows],
                "last_error": errors[-1] if errors else None,
            }
    return {
        "running": False,
        "log_size": size,
        "checkpoint": {"size": cp.size, "time": format_time(cp.time_ns)} if cp else None,
        "anchors": anchors,
    }


def cmd_status(args: argparse.Namespace) -> int:
    """The daemon's status document; when it is down, what the store knows, with the
    sensors as its last status.json left them."""
    from .health.text import render_text

    cfg = load_config(args.config, secrets=False)
    doc = _live_status(cfg)
    if doc is None:
        last = _status_json(cfg.data_dir / "status.json")
        stored = asyncio.run(_stored_status(cfg))
        doc = {**(last or {}), **stored, "running": False}
        doc["last_status"] = last.get("time") if last else None
        for gone in ("pid", "uptime_s", "http"):
            doc.pop(gone, None)
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        sys.stdout.write(render_text(doc))
    return 0


def cmd_reset_history(args: argparse.Namespace) -> int:
    from .history import reset_history
    from .keys import load_device_key
    from .rotate import running_daemon

    cfg = load_config(args.config, secrets=False)
    pid = running_daemon(cfg.data_dir)
    if pid is not None:
        raise GatewayError(
            f"the gateway appears to be running (pid {pid}, named in "
            f"{cfg.data_dir / 'status.json'}): stop the service first, then reset the history; "
            "if that process is not the gateway, delete status.json"
        )
    key = load_device_key(cfg.key_file)
    done = asyncio.run(reset_history(cfg, key, args.reason))
    for src, dst in done.moved:
        print(f"moved aside: {src} -> {dst} (kept, not deleted)")
    prev = done.previous
    if prev is None:
        print("no earlier history was found to supersede")
    else:
        print(f"superseded: checkpoint {prev['size']} (root {prev['root']}) per {prev['source']}")
    print(
        f"new log:     {cfg.db_path}, entry 0 the signed history-reset event "
        f"(reason: {args.reason!r}), checkpoint {done.checkpoint.size} signed"
    )
    print(f"high-water:  {done.high_water}")
    print(
        "Regulators will see the reset in every bundle of this log: its entry 0 is the signed "
        "history-reset event, and no checkpoint of the old history extends to it."
    )
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from .tools import print_probe, probe

    cfg = load_config(args.config)
    result = asyncio.run(probe(cfg, args.sensor))
    print_probe(result, sys.stdout)
    return 0 if result.reading is not None else 1


def cmd_scan(args: argparse.Namespace) -> int:
    from .tools import SCANNERS, candidate_ports, print_found, scan

    ports = args.port or candidate_ports()
    kinds = [k.strip() for k in (args.only or "").split(",") if k.strip()] or list(SCANNERS)
    found = asyncio.run(scan(ports, budget_s=args.budget, kinds=kinds))
    print_found(found, ports, sys.stdout)
    return 0 if found else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gateway", description=__doc__.splitlines()[0].strip("`"))
    p.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("init", help="create a device key and a commented config file")
    s.add_argument("dir", type=Path)
    s.add_argument(
        "--anchor-key",
        action="store_true",
        help="also create anchor.key, the secp256k1 key that signs EVM anchors, and print its "
        "address",
    )
    s.set_defaults(func=cmd_init)

    for name, func, helptext in (
        ("run", cmd_run, "run the daemon until SIGTERM/SIGINT"),
        ("check", cmd_check, "check the config file and the device key"),
        ("status", cmd_status, "show the gateway's state: log, sensors, each ledger's anchors"),
        (
            "rotate-key",
            cmd_rotate_key,
            "replace the device key (daemon stopped): the old key signs the hand-over",
        ),
    ):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("--config", type=Path, default=Path("gateway.toml"))
        s.set_defaults(func=func)
    sub.choices["status"].add_argument(
        "--json", action="store_true", help="print everything as JSON"
    )
    sub.choices["check"].add_argument(
        "--probe",
        action="store_true",
        help="also try every sensor, broker, ledger and TSA once and say what answered",
    )

    s = sub.add_parser(
        "export", help="write a bundle (or one reading's evidence) for the regulator"
    )
    s.add_argument("--config", type=Path, default=Path("gateway.toml"))
    s.add_argument("--out", type=Path, required=True)
    s.add_argument(
        "--format",
        choices=("v1", "v2"),
        help="v2 (default): the log's tiles in a tar file; v1: one JSON document",
    )
    s.add_argument("--since", help="first receive time (ISO 8601, UTC if no zone)")
    s.add_argument("--until", help="last receive time (ISO 8601, UTC if no zone)")
    s.add_argument(
        "--sensor",
        action="append",
        metavar="ID",
        help="carry only this sensor's entries in full, the rest as hashes (repeat; v2 only)",
    )
    which = s.add_mutually_exclusive_group()
    which.add_argument(
        "--proof",
        type=int,
        metavar="INDEX",
        help="write the evidence for entry INDEX alone (a C2SP tlog-proof file)",
    )
    which.add_argument(
        "--proof-sensor",
        metavar="ID",
        help="write the evidence for this sensor's reading received at or just before --proof-time",
    )
    s.add_argument("--proof-time", metavar="TIME", help="with --proof-sensor (ISO 8601)")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser(
        "publish",
        help="copy the log's tiles, manifest and newest checkpoint to a directory or URL "
        "(C2SP tlog-tiles), resuming from what is there",
    )
    s.add_argument("--config", type=Path, default=Path("gateway.toml"))
    s.add_argument(
        "--to", required=True, metavar="DIR|URL", help="a directory, or an http(s) URL taking PUT"
    )
    s.add_argument(
        "--header",
        action="append",
        metavar="'NAME: VALUE'",
        help="an HTTP header for every request, e.g. 'Authorization: Bearer ...' (repeat)",
    )
    s.set_defaults(func=cmd_publish)

    s = sub.add_parser(
        "reset-history",
        help="deliberately start a new log under this key (the old database is kept aside); "
        "only when `gateway run` refuses a log that does not extend the key's history",
    )
    s.add_argument("--config", type=Path, default=Path("gateway.toml"))
    s.add_argument(
        "--reason", required=True, help="why, in words a regulator will read (signed into the log)"
    )
    s.set_defaults(func=cmd_reset_history)

    s = sub.add_parser(
        "probe", help="one reading from one configured sensor, with the raw exchange"
    )
    s.add_argument("sensor", help="the sensor id in the config file")
    s.add_argument("--config", type=Path, default=Path("gateway.toml"))
    s.set_defaults(func=cmd_probe)

    s = sub.add_parser(
        "scan", help="look for sensors on serial ports, trying each serial driver in turn"
    )
    s.add_argument(
        "--port", action="append", help="a port to scan (repeat; default: every serial port)"
    )
    s.add_argument("--budget", type=float, default=20.0, help="seconds per port (default 20)")
    s.add_argument(
        "--only", help="comma-separated subset of the serial drivers (default: all of them)"
    )
    s.set_defaults(func=cmd_scan)

    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        # httpx logs every request at INFO: a line per anchor poll or published tile is
        # noise in a box's log.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except (GatewayError, LedgerClientError) as exc:
        print(f"gateway {args.command}: {exc.diagnostics()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
