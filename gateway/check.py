"""``gateway check``: what is wrong with a config on this box, and (``--probe``) what answers.

Three layers, each reporting every problem it finds, never only the first:

1. the file itself (``gateway.config.load_config``: syntax, types, ranges,
   unknown keys, secrets; each problem with its key path and line);
2. local checks against this machine (``local_problems``): the device key,
   the data directory and the log database in it (gateway/store.py's
   ``store_problems``), serial device nodes, TLS and TSA root files, anchoring
   keys, and whether there are sensors at all;
3. with ``--probe`` (``probe_all``): one reading from every serial sensor
   (its driver's ``probe``), a login at every MQTT broker, ``eth_chainId`` and
   the newest block from every EVM endpoint, a real timestamp from every TSA,
   each reported OK or failed with its cause, like ``telegraf --test``.

Exit status (docs/operations.md, "Checking the configuration"): 0 no errors
(warnings may be printed), 1 a probe failed, 2 the config has errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import getpass
import hashlib
import logging
import os
import stat
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from gateway.config import GatewayConfig, MqttConfig
from gateway.config.problems import Problem, format_problem, key_lines, locate
from gateway.drivers import SensorConfig, driver_for
from gateway.errors import GatewayError, KeyFileError

__all__ = [
    "EXIT_CONFIG",
    "EXIT_OK",
    "EXIT_PROBE",
    "ProbeOutcome",
    "local_problems",
    "print_problems",
    "probe_all",
]

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_PROBE = 1
"""The config is right but something it names did not answer (``--probe``)."""
EXIT_CONFIG = 2
"""The config has errors (file or local checks)."""

PROBE_TIMEOUT_S = 20.0
"""Longest wait for one probe (a sensor's reading, a broker's login, a ledger's answer)."""

_PROBE_DIGEST = hashlib.sha256(b"riverseal gateway check --probe").digest()
"""What the TSA probe has stamped: a fixed digest, so the token proves nothing about a log."""


@dataclass(frozen=True)
class ProbeOutcome:
    """One thing ``--probe`` tried: a sensor, a broker, a ledger endpoint."""

    item: str
    """``sensor ph-1``, ``mqtt``, ``rfc3161:tsa-a``, ``evm:besu``."""
    where: str
    """Its port, broker or URL."""
    ok: bool
    detail: str
    """What came back (a reading, a chain id, a timestamp), or why nothing did."""


# --- local checks --------------------------------------------------------------------------


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def data_dir_problem(data_dir: Path) -> str | None:
    """Why the gateway could not keep its log in ``data_dir`` (None: it can, or can make it)."""
    if data_dir.exists():
        if not data_dir.is_dir():
            return f"{data_dir} is not a directory"
        if not os.access(data_dir, os.W_OK | os.X_OK):
            return (
                f"{data_dir} is not writable by {_user()}: the log is written there (run the "
                "check as the service's user, e.g. sudo -u riverseal gateway check)"
            )
        return None
    ancestor = data_dir.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        return (
            f"{data_dir} does not exist and cannot be made: {ancestor} is not a writable "
            f"directory for {_user()}"
        )
    return None


def port_problem(port: str) -> str | None:
    """Why a serial port named in the config cannot be opened as it stands (no device node)."""
    if os.path.exists(port):
        return None
    return (
        f"{port} does not exist: is the adapter plugged in? `gateway scan` lists the serial "
        "ports there are; name a port by /dev/serial/by-id/... or the installer's "
        "/dev/riverseal/... so it keeps its name when replugged"
    )


def local_problems(cfg: GatewayConfig, rows: Sequence[int] | None = None) -> list[Problem]:
    """What stops ``cfg`` working on this machine, found without talking to anything.

    ``rows``: the ``[[sensor]]`` table of each sensor, when some tables were left out
    (a config with problems); default: sensor i is table i.
    """
    from gateway.keys import load_anchor_key, load_device_key

    found: list[Problem] = []
    if not cfg.sensors and rows is None:
        found.append(
            Problem(
                "sensor",
                "no [[sensor]] table: the gateway would start and record nothing "
                "(`gateway scan` prints a table to paste for each device it finds)",
                "warning",
            )
        )
    problem = data_dir_problem(cfg.data_dir)
    if problem:
        found.append(Problem("device.data_dir", problem))
    else:
        from gateway.store import store_problems

        # A damaged log database: gateway run refuses it (never recreates it).
        found += [Problem("device.data_dir", p) for p in store_problems(cfg.db_path)]
    try:
        load_device_key(cfg.key_file)
    except KeyFileError as exc:
        found.append(Problem("device.key_file", str(exc)))
    for i, s in enumerate(cfg.sensors):
        port = getattr(s, "port", None)
        if isinstance(port, str):
            problem = port_problem(port)
            if problem:
                row = i if rows is None else rows[i]
                found.append(Problem(f"sensor[{row}].port", f"sensor {s.id}: {problem}"))
    if cfg.mqtt is not None and cfg.mqtt.tls_ca is not None:
        from gateway.drivers.mqtt.source import tls_context

        try:
            tls_context(cfg.mqtt)
        except GatewayError as exc:
            key = "mqtt.tls_ca" if str(cfg.mqtt.tls_ca) in str(exc) else "mqtt.tls_cert"
            found.append(Problem(key, str(exc).removeprefix("sensor mqtt: ")))
    if cfg.mqtt is not None and cfg.mqtt.tls_key is not None:
        with contextlib.suppress(OSError):  # unreadable: tls_context said so above
            mode = stat.S_IMODE(cfg.mqtt.tls_key.stat().st_mode)
            if mode & 0o077:
                found.append(
                    Problem(
                        "mqtt.tls_key",
                        f"the client's private key {cfg.mqtt.tls_key} can be read by group or "
                        f"others (mode {mode:04o}): chmod 600 {cfg.mqtt.tls_key}",
                        "warning",
                    )
                )
    announce = cfg.uplink.announce if cfg.uplink is not None else None
    if announce is not None and announce.broker.tls_ca is not None:
        from gateway.drivers.mqtt.source import tls_context

        try:
            tls_context(announce.broker)
        except GatewayError as exc:
            key = "tls_ca" if str(announce.broker.tls_ca) in str(exc) else "tls_cert"
            found.append(Problem(f"uplink.announce.{key}", str(exc).removeprefix("sensor mqtt: ")))
    for i, tsa in enumerate(cfg.anchor.rfc3161):
        from ledger_client.errors import LedgerClientError
        from ledger_client.tsa import load_tsa_roots

        if not tsa.roots.is_absolute():
            continue  # the file's own problem, reported already
        try:
            load_tsa_roots([tsa.roots])
        except LedgerClientError as exc:
            found.append(Problem(f"anchor.rfc3161[{i}].roots", str(exc)))
    for i, evm in enumerate(cfg.anchor.evm):
        try:
            load_anchor_key(cfg.path.parent / evm.key_file)
        except KeyFileError as exc:
            found.append(Problem(f"anchor.evm[{i}].key_file", str(exc)))
    return found


def print_problems(path: str, text: str, problems: Sequence[Problem], out: TextIO) -> None:
    """Every problem, compiler style, with its line found in ``text`` if it has none yet."""
    lines = key_lines(text)
    located = [
        dataclasses.replace(p, line=locate(lines, p.key)) if p.line is None and p.key else p
        for p in problems
    ]
    for p in sorted(located, key=lambda p: p.line or 0):
        print(format_problem(path, p), file=out)


# --- probes --------------------------------------------------------------------------------


async def _timed(
    item: str, where: str, run: Callable[[], Awaitable[str]], timeout_s: float
) -> ProbeOutcome:
    """``run()``'s detail as a success, or its failure (an error, or no answer in time)."""
    try:
        async with asyncio.timeout(timeout_s):
            return ProbeOutcome(item, where, True, await run())
    except TimeoutError:
        return ProbeOutcome(item, where, False, f"no answer within {timeout_s:g} s")
    except _Failed as exc:
        return ProbeOutcome(item, where, False, str(exc))
    except (GatewayError, OSError) as exc:
        return ProbeOutcome(item, where, False, str(exc) or type(exc).__name__)


class _Failed(Exception):
    """A probe's failure already worded for the technician (stays in this module)."""


async def _read_once(cfg: GatewayConfig, sensor: SensorConfig) -> str:
    result = await driver_for(sensor).probe(sensor, cfg)
    if result.reading is None:
        raise _Failed(result.error or "no reading")
    values = ", ".join(f"{v.quantity} {v.value:g} {v.unit}" for v in result.reading.values)
    return values or "a reading with no values"


async def _probe_sensors(
    cfg: GatewayConfig, sensors: Sequence[int], timeout_s: float
) -> list[ProbeOutcome]:
    """One port's sensors, one after another (a port has one reader)."""
    out = []
    for i in sensors:
        s = cfg.sensors[i]
        where = driver_for(s).where(s)
        read = functools.partial(_read_once, cfg, s)
        out.append(await _timed(f"sensor {s.id}", where, read, timeout_s))
    return out


async def _probe_broker(
    cfg: GatewayConfig, timeout_s: float, m: MqttConfig | None = None, item: str = "mqtt"
) -> ProbeOutcome:
    """Log in to ``[mqtt]``'s broker (or ``m``, e.g. ``[uplink.announce]``'s)."""
    import aiomqtt

    from gateway.drivers.mqtt.source import (
        broker_where,
        check_tls,
        discard_client,
        explain_mqtt_error,
        new_client,
        tls_context,
    )

    m = m or cfg.mqtt
    assert m is not None

    async def login() -> str:
        context = tls_context(m)
        client = new_client(
            m,
            f"{m.client_id or 'riverseal'}-check-{os.getpid()}",
            persistent=False,
            context=context,
        )
        try:
            await check_tls(m, context)
            async with client:
                pass
        except (aiomqtt.MqttError, OSError) as exc:
            discard_client(client)
            raise _Failed(explain_mqtt_error(exc)) from exc
        who = f" as {m.username}" if m.username else " (anonymous)"
        return f"connected and logged in{who}"

    return await _timed(item, broker_where(m).removeprefix("broker "), login, timeout_s)


async def _probe_uplink(cfg: GatewayConfig, timeout_s: float) -> ProbeOutcome:
    """Read the uplink target's checkpoint (nothing is written)."""
    from gateway.uplink import open_uplink_target
    from ledger_client.bundle_v2 import CHECKPOINT_NAME

    assert cfg.uplink is not None
    target = open_uplink_target(cfg.uplink)

    async def read() -> str:
        async with target:
            note = await target.get(CHECKPOINT_NAME)
        if note is None:
            return "reachable, holds no checkpoint yet"
        lines = note.decode("utf-8", "replace").split("\n")
        return f"reachable, holds checkpoint {lines[1] if len(lines) > 1 else '?'} of {lines[0]}"

    return await _timed("uplink", cfg.uplink.to, read, timeout_s)


async def _probe_tsa(cfg: GatewayConfig, i: int, timeout_s: float) -> ProbeOutcome:
    from gateway.anchoring.rfc3161 import Rfc3161Backend
    from ledger_client.errors import LedgerClientError
    from ledger_client.tsa import load_tsa_roots

    tsa = cfg.anchor.rfc3161[i]

    async def stamp() -> str:
        try:
            roots = load_tsa_roots([tsa.roots])
        except LedgerClientError as exc:
            raise _Failed(f"roots {tsa.roots}: {exc}") from exc
        backend = Rfc3161Backend(tsa.name, tsa.url, roots, timeout_s=tsa.timeout_s)
        try:
            progress = await backend.submit(_PROBE_DIGEST, 0)
        finally:
            await backend.aclose()
        return f"timestamp {progress.receipt.get('gen_time')}, checked against its roots"

    return await _timed(f"rfc3161:{tsa.name}", tsa.url, stamp, timeout_s)


async def _probe_evm(cfg: GatewayConfig, i: int, url: str, timeout_s: float) -> ProbeOutcome:
    from gateway.anchoring.evm_rpc import EvmRpc, quantity

    evm = cfg.anchor.evm[i]

    async def ask() -> str:
        rpc = EvmRpc([url], evm.chain_id, timeout_s=evm.timeout_seconds, token=evm.token)
        async with rpc:
            block = quantity(await rpc.call("eth_blockNumber"), "a block number")
        return f"chain {evm.chain_id}, block {block}"

    return await _timed(f"evm:{evm.name}", url, ask, timeout_s)


async def probe_all(
    cfg: GatewayConfig, *, timeout_s: float = PROBE_TIMEOUT_S
) -> list[ProbeOutcome]:
    """Try everything ``cfg`` names once, all at once (a port's sensors in turn)."""
    by_port: dict[str, list[int]] = {}
    for i, s in enumerate(cfg.sensors):
        port = getattr(s, "port", None)
        if isinstance(port, str):  # serial; MQTT sensors are reached through the broker
            by_port.setdefault(port, []).append(i)
    async with asyncio.TaskGroup() as tg:
        tasks = [
            tg.create_task(_probe_sensors(cfg, ids, timeout_s), name=f"check.probe[{port}]")
            for port, ids in by_port.items()
        ]
        singles = []
        if cfg.mqtt is not None:
            singles.append(tg.create_task(_probe_broker(cfg, timeout_s), name="check.probe[mqtt]"))
        if cfg.uplink is not None:
            singles.append(
                tg.create_task(_probe_uplink(cfg, timeout_s), name="check.probe[uplink]")
            )
            if cfg.uplink.announce is not None:
                singles.append(
                    tg.create_task(
                        _probe_broker(
                            cfg, timeout_s, cfg.uplink.announce.broker, "uplink.announce"
                        ),
                        name="check.probe[uplink.announce]",
                    )
                )
        for i, tsa in enumerate(cfg.anchor.rfc3161):
            singles.append(
                tg.create_task(_probe_tsa(cfg, i, timeout_s), name=f"check.probe[{tsa.name}]")
            )
        for i, evm in enumerate(cfg.anchor.evm):
            for url in evm.rpc:
                singles.append(
                    tg.create_task(
                        _probe_evm(cfg, i, url, timeout_s), name=f"check.probe[{evm.name}]"
                    )
                )
    outcomes = [o for t in tasks for o in t.result()]
    return outcomes + [t.result() for t in singles]


def print_outcomes(outcomes: Sequence[ProbeOutcome], mqtt_sensors: int, out: TextIO) -> None:
    if not outcomes:
        print("probe: nothing to try", file=out)
    for o in outcomes:
        state = "OK    " if o.ok else "FAILED"
        print(f"  {state} {o.item:<24} {o.where}: {o.detail}", file=out)
    if mqtt_sensors:
        print(
            f"  ({mqtt_sensors} MQTT sensor(s) publish through the broker above; "
            "`gateway probe ID` waits for one's next message)",
            file=out,
        )
