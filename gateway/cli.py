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
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

from ledger_client.errors import LedgerClientError

from .config import load_config
from .errors import ConfigError, GatewayError
from .keys import create_device_key

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
    key = create_device_key(target / "device.key")
    config_path.write_text(CONFIG_TEMPLATE.format(device_id=key.device_id, name=config_path))
    (target / "trust.txt").write_text(
        f"# Register this device with the regulator: the device's verifier key.\nkey {key.vkey}\n"
    )
    print(f"device id:    {key.device_id}")
    print(f"verifier key: {key.vkey}")
    print(f"created {target / 'device.key'} (mode 0600), {config_path} and {target / 'trust.txt'}")
    print("Send the verifier key (or trust.txt) to the regulator; keep device.key on the box.")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from .keys import load_device_key

    cfg = load_config(args.config)
    key = load_device_key(cfg.key_file)
    print(f"{args.config}: OK — device {key.device_id}, {len(cfg.sensors)} sensors")
    for s in cfg.sensors:
        where = getattr(s, "port", None) or getattr(s, "topic", "")
        print(f"  {s.id:<16} {s.driver:<5} {where}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .daemon import Gateway

    cfg = load_config(args.config)

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Gateway(cfg).run(stop)

    asyncio.run(go())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_bundle
    from .keys import load_device_key
    from .log import Log
    from .store import Store

    cfg = load_config(args.config)
    since = _parse_time(args.since) if args.since else None
    until = _parse_time(args.until) if args.until else None

    async def go() -> int:
        key = load_device_key(cfg.key_file)
        async with Store(cfg.db_path) as store:
            log_ = Log(store, key)
            await log_.open()
            bundle = await export_bundle(log_, since_ns=since, until_ns=until)
        out: Path = args.out
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(bundle.dumps(), encoding="utf-8")
        tmp.replace(out)
        print(
            f"wrote {out}: {len(bundle.entries)} entries, {len(bundle.checkpoints)} checkpoints, "
            f"{len(bundle.anchors)} anchors"
        )
        return 0

    return asyncio.run(go())


def cmd_status(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    path = cfg.data_dir / "status.json"
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise GatewayError(f"no status at {path} ({exc}); is the gateway running?") from exc
    print(json.dumps(status, indent=2, sort_keys=True))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return asyncio.run(run_demo(seconds=args.seconds, out=args.out))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gateway", description=__doc__.splitlines()[0].strip("`"))
    p.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("init", help="create a device key and a commented config file")
    s.add_argument("dir", type=Path)
    s.set_defaults(func=cmd_init)

    for name, func, helptext in (
        ("run", cmd_run, "run the daemon until SIGTERM/SIGINT"),
        ("check", cmd_check, "check the config file and the device key"),
        ("status", cmd_status, "show what the running gateway last reported"),
    ):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("--config", type=Path, default=Path("gateway.toml"))
        s.set_defaults(func=func)

    s = sub.add_parser("export", help="write a bundle for the regulator")
    s.add_argument("--config", type=Path, default=Path("gateway.toml"))
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--since", help="first receive time (ISO 8601, UTC if no zone)")
    s.add_argument("--until", help="last receive time (ISO 8601, UTC if no zone)")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("demo", help="run a simulated station end to end and verify its bundle")
    s.add_argument("--seconds", type=float, default=20.0)
    s.add_argument("--out", type=Path, default=Path("riverseal-demo"))
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except (GatewayError, LedgerClientError) as exc:
        print(f"gateway {args.command}: {exc.diagnostics()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
