"""``riverseal-witness``: make a witness key, show its vkey, serve add-checkpoint.

Exit status: 0 done (``serve``: stopped by SIGINT/SIGTERM), 2 a key, log list,
state file or address that cannot be used (the message says which).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from ledger_client.errors import LedgerClientError
from ledger_client.witness import WitnessSigner

from .errors import MonitorError
from .witness import Witness, WitnessConfig, load_key

__all__ = ["main"]

EXIT_OK = 0
EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="riverseal-witness",
        description="A C2SP tlog-witness for riverseal boxes (docs/witness.md).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    k = sub.add_parser("keygen", help="make a witness key (file mode 0600) and print its vkey")
    k.add_argument("name", help="the witness's key name, e.g. witness.regulator.example/w1")
    k.add_argument("--key", type=Path, required=True, help="file to write; must not exist")
    v = sub.add_parser("vkey", help="print the vkey of a witness key (for trust files)")
    v.add_argument("--key", type=Path, required=True)
    s = sub.add_parser("serve", help="serve add-checkpoint until stopped")
    s.add_argument("--key", type=Path, required=True, help="the witness key file")
    s.add_argument(
        "--logs", type=Path, required=True, help="log list: lines 'log <origin> <vkey> ...'"
    )
    s.add_argument("--db", type=Path, required=True, help="SQLite state file")
    s.add_argument("--listen", default="127.0.0.1:8380", help="HOST:PORT (port 0: any free)")
    s.add_argument("--prefix", default="", help="submission prefix, e.g. /witness")
    return p


def _keygen(name: str, path: Path) -> int:
    try:
        signer = WitnessSigner.generate(name)
    except LedgerClientError as exc:
        print(f"riverseal-witness: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        print(f"riverseal-witness: cannot create {path}: {exc.strerror}", file=sys.stderr)
        return EXIT_CONFIG
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(signer.to_skey() + "\n")
    print(signer.key.to_vkey())
    return EXIT_OK


async def _serve(config: WitnessConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Witness(config) as witness:
        print(
            f"riverseal-witness: listening on {witness.url} as {witness.signer.key.to_vkey()}",
            file=sys.stderr,
            flush=True,
        )
        await witness.serve(stop)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "keygen":
            return _keygen(args.name, args.key)
        if args.command == "vkey":
            print(load_key(args.key).key.to_vkey())
            return EXIT_OK
        host, sep, port = args.listen.rpartition(":")
        if not sep or not port.isdigit():
            print(f"riverseal-witness: --listen {args.listen!r} is not HOST:PORT", file=sys.stderr)
            return EXIT_CONFIG
        config = WitnessConfig(
            key_file=args.key,
            logs_file=args.logs,
            db_path=args.db,
            host=host,
            port=int(port),
            prefix=args.prefix.rstrip("/"),
        )
        asyncio.run(_serve(config))
    except MonitorError as exc:
        print(f"riverseal-witness: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return EXIT_OK
