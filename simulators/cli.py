"""`sensor-sim`: run simulated sensors until interrupted.

    sensor-sim ezo --kind ph --link /tmp/ph0 [--seed N] [--delay-scale 1.0] [--upper-case]
    sensor-sim mqtt --host 127.0.0.1 --port 1883 --topic riverseal/site1/node1 --interval 1
                    [--count N] [--quantities temperature,turbidity] [--format json|senml]
                    [--tls-ca CA --tls-cert C --tls-key K] [--username U --password P]
                    [--garbage-every N] [--spike-every N] [--lost-every N] [--disconnect-every N]
    sensor-sim sdi12 --link /tmp/sdi12-0 --sonde 0:multi --sonde 1:ctd [--seed N] [--echo]
    sensor-sim modbus --link /tmp/rs485-0 --profile ysi-odo-rtu --slave 1
                      [--profile seeed-ectds10 --slave 2 ...] [--seed N] [--baudrate B]
    sensor-sim station --config station.toml [--gateway-config sensors.toml]
    sensor-sim fleet --boxes N --to DIR|URL --data DIR [--broker HOST:PORT] [--seconds S]
                     [--rate R] [--commit-every S] [--checkpoint-every S] [--procs K]

Both exit 0 on SIGINT or SIGTERM; `mqtt --count N` also exits 0 once N
messages are acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, get_args

from simulators.ezo import EzoCircuit, EzoKind
from simulators.ezo_pty import EzoPtyDevice
from simulators.modbus import ModbusSimBus, SimSlave, load_sim_profile
from simulators.mqtt_node import QUANTITIES, MqttNode, NodeFaults
from simulators.river import RiverModel
from simulators.sdi12 import SONDE_MODELS, Sdi12PtyAdapter, parse_sonde_spec
from simulators.station import Station, load_station
from simulators.station import table as station_table

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sensor-sim", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="WARNING", help="Python logging level")
    sub = parser.add_subparsers(dest="command", required=True)

    ezo = sub.add_parser("ezo", help="an Atlas Scientific EZO circuit on a pty")
    ezo.add_argument("--kind", choices=get_args(EzoKind), required=True)
    ezo.add_argument("--link", type=Path, help="symlink to create to the pty (a stable name)")
    ezo.add_argument("--seed", type=int, default=0, help="river and fault seed")
    ezo.add_argument("--delay-scale", type=float, default=1.0, help="scale processing delays")
    ezo.add_argument("--upper-case", action="store_true", help="upper-case reply identifiers")
    ezo.add_argument("--firmware", default="2.16")
    ezo.add_argument("--name", default="")

    mqtt = sub.add_parser("mqtt", help="an MQTT sensor node")
    mqtt.add_argument("--host", default="127.0.0.1")
    mqtt.add_argument("--port", type=int, default=1883)
    mqtt.add_argument("--topic", default="riverseal/site1/node1")
    mqtt.add_argument("--interval", type=float, default=1.0, help="seconds between messages")
    mqtt.add_argument("--count", type=int, help="stop after this many messages")
    mqtt.add_argument(
        "--quantities",
        default=",".join(QUANTITIES),
        help=f"comma-separated subset of {','.join(QUANTITIES)}",
    )
    mqtt.add_argument("--node-id", default="node1", help="MQTT client identifier")
    mqtt.add_argument("--seed", type=int, default=0)
    mqtt.add_argument("--malformed-every", type=int, default=0)
    mqtt.add_argument("--duplicate-every", type=int, default=0)
    mqtt.add_argument("--format", choices=("json", "senml"), default="json")
    for opt in ("garbage", "truncated", "spike", "lost", "disconnect"):
        mqtt.add_argument(f"--{opt}-every", type=int, default=0)
    mqtt.add_argument("--tls-ca", type=Path, help="CA certificate: turns TLS on")
    mqtt.add_argument("--tls-cert", type=Path, help="client certificate (mutual TLS)")
    mqtt.add_argument("--tls-key", type=Path, help="client key (mutual TLS)")
    mqtt.add_argument("--username")
    mqtt.add_argument("--password")

    sdi12 = sub.add_parser("sdi12", help="a USB SDI-12 adapter with sondes behind it, on a pty")
    sdi12.add_argument("--link", type=Path, help="symlink to create to the pty (a stable name)")
    sdi12.add_argument(
        "--sonde",
        action="append",
        required=True,
        metavar="ADDRESS[:MODEL]",
        help=f"a sonde on the bus (repeat); MODEL is one of {','.join(SONDE_MODELS)}",
    )
    sdi12.add_argument("--seed", type=int, default=0, help="river and noise seed")
    sdi12.add_argument("--echo", action="store_true", help="echo each command before its reply")

    modbus = sub.add_parser("modbus", help="Modbus RTU probes on one RS-485 bus, on a pty")
    modbus.add_argument("--link", type=Path, help="symlink to create to the pty (a stable name)")
    modbus.add_argument(
        "--profile",
        action="append",
        required=True,
        help="register profile: a shipped name or a .toml path (repeat, one per --slave)",
    )
    modbus.add_argument(
        "--slave", action="append", type=int, required=True, help="slave id (repeat)"
    )
    modbus.add_argument("--seed", type=int, default=0, help="river seed")
    modbus.add_argument("--baudrate", type=int, default=9600)
    modbus.add_argument(
        "--parity", choices=("N", "E", "O"), default="N", help="N on ptys (see simulators.modbus)"
    )

    station = sub.add_parser(
        "station", help="a whole station (EZO, Modbus, SDI-12, MQTT) from a TOML file"
    )
    station.add_argument("--config", type=Path, required=True, help="station file (TOML)")
    station.add_argument(
        "--gateway-config",
        type=Path,
        metavar="FILE",
        help="write the [[sensor]] tables a gateway needs to read this station",
    )
    fleet = sub.add_parser(
        "fleet",
        help="N simulated boxes in one process: the gateway's real log and uplink, "
        "simulated sensors (needs the gateway installed)",
    )
    fleet.add_argument("--boxes", type=int, required=True)
    fleet.add_argument("--to", required=True, metavar="DIR|URL", help="box d publishes to TO/d")
    fleet.add_argument("--data", type=Path, required=True, help="the boxes' stores and trust files")
    fleet.add_argument("--broker", metavar="HOST:PORT", help="announce checkpoints on this broker")
    fleet.add_argument("--seconds", type=float, help="run this long (default: until signalled)")
    fleet.add_argument("--rate", type=float, default=1.0, help="readings per box per second")
    fleet.add_argument(
        "--commit-every",
        type=float,
        default=2.0,
        metavar="S",
        help="each box commits what it read every S seconds, on a fixed schedule (default 2)",
    )
    fleet.add_argument(
        "--checkpoint-every",
        type=float,
        default=30.0,
        metavar="S",
        help="each box signs and publishes a checkpoint every S seconds (default 30)",
    )
    fleet.add_argument("--max-bytes-per-s", type=int, default=262_144, help="each box's uplink")
    fleet.add_argument("--seed", type=int, default=0, help="box keys derive from it")
    fleet.add_argument(
        "--procs",
        type=int,
        metavar="K",
        help="worker processes the boxes are split across "
        "(default: one per 250 boxes, at most one per core)",
    )
    fleet.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # set by the parent
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if args.command == "fleet":
        return _fleet(parser, args)
    try:
        work = {
            "ezo": _ezo,
            "mqtt": _mqtt,
            "sdi12": _sdi12,
            "modbus": _modbus,
            "station": _station,
        }[args.command](args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        return asyncio.run(_until_signalled(work))
    except OSError as exc:  # e.g. --link names a regular file, or no pty available
        print(f"sensor-sim: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before our handler was installed: still a clean stop
        return 0


def _fleet(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    # The fleet runs the gateway's own code: imported only when asked for.
    from simulators.fleet import FleetConfig, default_procs, fleet_main

    broker = None
    if args.broker:
        host, sep, port = args.broker.rpartition(":")
        if not sep or not port.isdigit():
            parser.error(f"--broker {args.broker!r} is not HOST:PORT")
        broker = (host, int(port))
    if args.boxes < 1 or args.rate <= 0 or args.commit_every <= 0:
        parser.error("--boxes, --rate and --commit-every must be positive")
    procs = default_procs(args.boxes) if args.procs is None else args.procs
    if not 1 <= procs <= args.boxes:
        parser.error("--procs must be between 1 and --boxes")
    if args.worker is not None and not 0 <= args.worker < procs:
        parser.error("--worker must be below --procs")
    config = FleetConfig(
        boxes=args.boxes,
        to=args.to,
        data=args.data,
        broker=broker,
        seconds=args.seconds,
        rate=args.rate,
        commit_every_s=args.commit_every,
        checkpoint_every_s=args.checkpoint_every,
        max_bytes_per_s=args.max_bytes_per_s,
        seed=args.seed,
        procs=procs,
        worker=args.worker,
    )
    return asyncio.run(fleet_main(config))


def _ezo(args: argparse.Namespace) -> Coroutine[Any, Any, None]:
    river = RiverModel(seed=args.seed)
    circuit = EzoCircuit(
        args.kind,
        river,
        firmware=args.firmware,
        name=args.name,
        upper_case_replies=args.upper_case,
        seed=args.seed,
        delay_scale=args.delay_scale,
    )

    async def serve() -> None:
        async with EzoPtyDevice(circuit, args.link) as device:
            link = f" (link {device.link_path})" if device.link_path else ""
            print(f"{args.kind} EZO on {device.device_path}{link}", flush=True)
            await asyncio.Event().wait()  # until cancelled by a signal

    return serve()


def _sdi12(args: argparse.Namespace) -> Coroutine[Any, Any, None]:
    for spec in args.sonde:
        parse_sonde_spec(spec)  # a bad spec is a usage error, before anything starts
    host = Sdi12PtyAdapter.with_sondes(
        args.link, args.sonde, RiverModel(seed=args.seed), seed=args.seed, echo=args.echo
    )

    async def serve() -> None:
        async with host:
            link = f" (link {host.link_path})" if host.link_path else ""
            sondes = ", ".join(args.sonde)
            print(f"SDI-12 adapter on {host.device_path}{link} with sondes {sondes}", flush=True)
            await asyncio.Event().wait()  # until cancelled by a signal

    return serve()


def _modbus(args: argparse.Namespace) -> Coroutine[Any, Any, None]:
    if len(args.profile) != len(args.slave):
        raise ValueError("give one --profile per --slave, in the same order")
    if len(set(args.slave)) != len(args.slave) or not all(1 <= s <= 247 for s in args.slave):
        raise ValueError("slave ids must be distinct and within 1..247")
    river = RiverModel(seed=args.seed)
    slaves = [
        SimSlave(slave, load_sim_profile(profile), river)
        for slave, profile in zip(args.slave, args.profile, strict=True)
    ]

    async def serve() -> None:
        async with ModbusSimBus(
            slaves, args.link, baudrate=args.baudrate, parity=args.parity, seed=args.seed
        ) as bus:
            link = f" (link {bus.link_path})" if bus.link_path else ""
            who = ", ".join(f"{s.slave}:{s.profile.name}" for s in slaves)
            print(f"Modbus RTU bus on {bus.device_path}{link} with slaves {who}", flush=True)
            await asyncio.Event().wait()  # until cancelled by a signal

    return serve()


def _station(args: argparse.Namespace) -> Coroutine[Any, Any, None]:
    spec = load_station(args.config)  # StationConfigError is a ValueError: a usage error

    async def serve() -> None:
        async with Station(spec) as st:
            if args.gateway_config is not None:
                args.gateway_config.write_text(st.gateway_sensors(), encoding="utf-8")
            print(station_table(st.devices()), flush=True)
            if args.gateway_config is not None:
                print(f"gateway sensor tables written to {args.gateway_config}", flush=True)
            print("station running", flush=True)
            await asyncio.Event().wait()  # until cancelled by a signal

    return serve()


def _mqtt(args: argparse.Namespace) -> Coroutine[Any, Any, None]:
    node = MqttNode(
        args.host,
        args.port,
        args.topic,
        [q.strip() for q in args.quantities.split(",") if q.strip()],
        RiverModel(seed=args.seed),
        args.interval,
        args.node_id,
        args.seed,
        malformed_every=args.malformed_every,
        duplicate_every=args.duplicate_every,
        format=args.format,
        faults=NodeFaults(
            garbage_every=args.garbage_every,
            truncated_every=args.truncated_every,
            spike_every=args.spike_every,
            lost_every=args.lost_every,
            disconnect_every=args.disconnect_every,
        ),
        username=args.username,
        password=args.password,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )

    async def publish() -> None:
        print(f"MQTT node {args.node_id} -> {args.host}:{args.port} {args.topic}", flush=True)
        await node.run(args.count)

    return publish()


async def _until_signalled(work: Coroutine[Any, Any, None]) -> int:
    """Run `work` until it finishes or SIGINT/SIGTERM arrives; 0 either way.

    `work` prints its banner only once it runs, which is after the handlers are
    installed, so a client that waits for the banner can signal at once.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(work, name="sensor-sim")
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
