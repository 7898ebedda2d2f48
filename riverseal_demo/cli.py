"""``riverseal-demo``: run a simulated station end to end and verify its bundle.

Exit status: ``ledger-verify``'s for the verdict level (0 only for VERIFIED);
1 when the demo itself could not run; 2 when called wrongly.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from gateway.errors import GatewayError
from ledger_client import LedgerClientError
from riverseal_demo.demo import DemoError, run_demo

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="riverseal-demo",
        description="run a simulated station end to end and verify its bundle",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    p.add_argument(
        "--seconds", type=float, default=20.0, help="how long the gateway runs (default 20)"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("riverseal-demo"),
        help="where the station, bundle and TSA root go (default riverseal-demo/)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        # httpx logs every request at INFO: a line per anchor request is noise here.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return asyncio.run(run_demo(seconds=args.seconds, out=args.out))
    except DemoError as exc:
        print(f"riverseal-demo: {exc}", file=sys.stderr)
        return 1
    except (GatewayError, LedgerClientError) as exc:
        print(f"riverseal-demo: {exc.diagnostics()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
