"""``riverseal-monitor``: follow boxes (``run``), list alerts, show status (docs/monitor.md §1).

Exit status: 0 done (``run``: stopped by SIGINT/SIGTERM), 2 a configuration or
state that cannot be used (the message says which).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from pathlib import Path

from .config import load_config
from .errors import MonitorError
from .monitor import Monitor
from .shard import default_instance
from .state_sqlite import SqliteState, State, read_alerts, read_status
from .witness import load_key

__all__ = ["main"]

EXIT_OK = 0
EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="riverseal-monitor",
        description="Follow riverseal boxes: verify what they publish as it grows, and alert.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="follow the configured boxes until stopped")
    r.add_argument("--config", type=Path, required=True, help="monitor.toml")
    r.add_argument("-v", "--verbose", action="store_true", help="log each verified checkpoint")
    for name, what in (("alerts", "list alerts, oldest first"), ("status", "per box status")):
        s = sub.add_parser(name, help=what)
        s.add_argument("--config", type=Path, required=True, help="monitor.toml")
        s.add_argument("--json", action="store_true", help="JSON instead of text")
        if name == "alerts":
            s.add_argument("--open", action="store_true", help="only alerts not cleared")
    return p


async def _run(config_path: Path) -> None:
    config = load_config(config_path)
    witness = None if config.witness_key is None else load_key(config.witness_key)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    if config.state_url is not None:
        from .state_postgres import PostgresState  # psycopg only for a PostgreSQL state

        instance = config.instance or default_instance()
        opened: contextlib.AbstractAsyncContextManager[State] = PostgresState(
            config.state_url, instance=instance
        )
    else:
        opened = SqliteState(config.state)
    async with opened as state, Monitor(config, state, witness=witness) as mon:
        with contextlib.suppress(asyncio.CancelledError):
            await mon.run()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            logging.basicConfig(
                level=logging.INFO if args.verbose else logging.WARNING,
                format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                stream=sys.stderr,
            )
            logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request is noise
            asyncio.run(_run(args.config))
            return EXIT_OK
        config = load_config(args.config)
        state = config.state
        if config.state_url is not None:
            from .state_postgres import read_alerts_pg, read_status_pg

            url = config.state_url
            if args.command == "alerts":
                alerts = asyncio.run(read_alerts_pg(url, open_only=args.open))
            else:
                boxes = asyncio.run(read_status_pg(url))
        if args.command == "alerts":
            if config.state_url is None:
                alerts = read_alerts(state, open_only=args.open)
            for a in alerts:
                if args.json:
                    print(json.dumps(a, sort_keys=True))
                else:
                    status = "open" if a["cleared_s"] is None else "cleared"
                    print(f"{a['origin']}  {a['kind']:<14} {status:<7} {a['message']}")
            return EXIT_OK
        if config.state_url is None:
            boxes = read_status(state)
        if args.json:
            print(json.dumps({"boxes": boxes}, indent=1, sort_keys=True))
        else:
            for b in boxes:
                print(
                    f"{b['origin']}  verified {b['verified_size']} entries, "
                    f"{b['open_alerts']} open alert(s)"
                )
                for sensor, s in b["sensors"].items():
                    print(f"  {sensor}: {s['readings']} readings, last {s['last']}")
    except MonitorError as exc:
        print(f"riverseal-monitor: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return EXIT_OK


if __name__ == "__main__":  # ``python -m riverseal_monitor.monitor_cli``, as the tests run it
    sys.exit(main())
