"""The technician's tools for SDI-12 sondes: ``probe_sdi12`` and ``scan_sdi12``."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from gateway.drivers.base import Found, ProbeResult
from gateway.drivers.link.record import Transcript
from gateway.drivers.link.serial import SerialLink
from gateway.drivers.link.snippet import TomlValue, sensor_snippet
from gateway.drivers.sdi12.config import Sdi12SensorConfig, Terminator
from gateway.drivers.sdi12.protocol import (
    ADDRESSES,
    CountMismatch,
    Identity,
    MeasureRequest,
    ParameterInfo,
    acknowledge,
    address_query,
    identify_measurement,
    identify_parameter,
    parse_acknowledge,
    parse_address,
    parse_measure_reply,
    parse_parameter_info,
)
from gateway.drivers.sdi12.source import (
    SCAN_REPLY_TIMEOUT_S,
    Adapter,
    CommandFailed,
    Session,
)
from gateway.errors import SensorError
from gateway.pipeline import Reading

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

__all__ = ["probe", "probe_sdi12", "scan", "scan_sdi12"]

logger = logging.getLogger(__name__)


async def probe_sdi12(cfg: Sdi12SensorConfig) -> ProbeResult:
    """One identify and one measurement, with every command and reply as an ``Exchange``."""
    transcript = Transcript()

    def note(sensor: str, reason: str, detail: str) -> None:
        transcript.annotate(f"{reason}: {detail}")

    reading: Reading | None = None
    error: str | None = None
    try:
        async with SerialLink(cfg.port, cfg.baudrate, sensor=cfg.id) as link:
            if cfg.open_delay_s:
                await asyncio.sleep(cfg.open_delay_s)
            adapter = Adapter(link, terminator=cfg.terminator_bytes, transcript=transcript)
            session = Session(adapter, note)
            request = MeasureRequest.parse(cfg.command)
            try:
                await session.identify(cfg)
            except CommandFailed as exc:
                logger.debug("%s: identify failed: %s", cfg.id, exc.problem)
            reading = await session.measure(cfg, request)
    except CommandFailed as exc:
        error = (
            f"address {cfg.address!r} on {cfg.port} did not answer: check the wiring, the "
            f"sonde's power and its address ({exc.problem})"
            if exc.silent
            else f"address {cfg.address!r} answered, but never validly: {exc.problem}"
        )
    except SensorError as exc:
        error = exc.problem
    return ProbeResult(cfg.id, transcript.exchanges, reading, error)


def _quantity_name(info: ParameterInfo, index: int) -> str:
    name = re.sub(r"[^0-9a-z]+", "_", info.name.lower()).strip("_")
    return name or f"value{index}"


def _snippet(
    port: str,
    address: str,
    request: MeasureRequest,
    quantities: Sequence[tuple[str, str]],
    *,
    named: bool,
    terminator: Terminator,
    baudrate: int,
) -> str:
    pairs: list[TomlValue] = [[name, unit] for name, unit in quantities]
    fields: list[tuple[str, TomlValue] | tuple[str, TomlValue, str]] = [
        ("id", f"sdi12-{address}"),
        ("driver", "sdi12"),
        ("port", port),
        ("address", address),
        ("command", request.code),
        ("quantities", pairs) if named else ("quantities", pairs, "name each value and its unit"),
        ("interval_s", 60.0),
        ("timeout_s", 1.0),
    ]
    if terminator != "none":
        fields.append(("terminator", terminator))
    if baudrate != 9600:
        fields.append(("baudrate", baudrate))
    return sensor_snippet(*fields)


async def _measurement_shape(
    session: Session, cfg: Sdi12SensorConfig, identity: Identity | None, request: MeasureRequest
) -> tuple[int, list[tuple[str, str]], bool]:
    """(value count, quantity names, whether the sonde named them) for a snippet."""
    count: int | None = None
    names: list[tuple[str, str]] = []
    if identity is not None and identity.version_number >= 14:
        try:
            reply = await session.command(
                cfg,
                identify_measurement(cfg.address, request),
                lambda line: parse_measure_reply(line, cfg.address, request),
            )
            count = reply.count
            for number in range(1, count + 1):
                info = await session.command(
                    cfg,
                    identify_parameter(cfg.address, request, number),
                    lambda line: parse_parameter_info(line, cfg.address, crc=request.crc),
                )
                if info is None:
                    break
                names.append((_quantity_name(info, number), info.units or "1"))
        except CommandFailed:
            names = []
    if count is None:
        # Before v1.4 only a real measurement tells the count; the next command aborts it.
        reply = await session.command(
            cfg,
            request.command(cfg.address),
            lambda line: parse_measure_reply(line, cfg.address, request),
        )
        count = reply.count
    if len(names) == count:
        return count, names, True
    return count, [(f"value{i}", "1") for i in range(1, count + 1)], False


async def scan_sdi12(
    port: str,
    budget_s: float,
    *,
    baudrate: int = 9600,
    terminator: Terminator = "none",
    open_delay_s: float = 2.5,
    reply_timeout_s: float = SCAN_REPLY_TIMEOUT_S,
    adapter_address: str | None = "z",
) -> list[Found]:
    """Find the sondes on one adapter within ``budget_s`` seconds.

    Asks ``?!`` once (a lone sonde names itself and is asked first), then
    ``a!`` at every address (0-9 first, then A-Z, a-z) until the budget runs
    out; each address that answers is described at once with ``aI!`` and its
    measurement shape (``aIM!`` and ``aIM_nnn!`` on v1.4 sondes, else ``aM!``).
    ``adapter_address`` is skipped: Dr. Liu's adapter answers there itself.
    Addresses left when the budget is spent are not tried (logged). One
    attempt per address: a scan trades the spec's retries for coverage.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_s
    found: list[Found] = []
    probe = Sdi12SensorConfig(
        id="scan",
        port=port,
        address="0",
        quantities=(("value", "1"),),
        timeout_s=reply_timeout_s,
        retries=0,
        baudrate=baudrate,
        terminator=terminator,
        open_delay_s=open_delay_s,
    )

    def left() -> float:
        return deadline - loop.time()

    def ignore(sensor: str, reason: str, detail: str) -> None:
        logger.debug("scan %s: %s: %s", port, reason, detail)

    try:
        async with (
            SerialLink(port, baudrate, sensor=f"scan[{port}]") as link,
            asyncio.timeout_at(deadline),
        ):
            if open_delay_s:
                await asyncio.sleep(open_delay_s)
            session = Session(Adapter(link, terminator=probe.terminator_bytes), ignore)
            order = [a for a in ADDRESSES if a != adapter_address]
            try:
                lone = await session.command(probe, address_query(), parse_address)
                if lone in order:
                    order.remove(lone)
                    order.insert(0, lone)
            except CommandFailed:
                pass  # none, or several talking at once: ask each address
            for index, address in enumerate(order):
                if left() < reply_timeout_s:
                    logger.warning(
                        "scan %s: budget spent; addresses %s not tried", port, order[index:]
                    )
                    break
                cfg = replace(probe, address=address)
                try:
                    await session.command(
                        cfg,
                        acknowledge(address),
                        functools.partial(parse_acknowledge, address=address),
                    )
                except CommandFailed:
                    continue
                # Described at once, so what the budget allowed to find comes with a snippet.
                found.append(await _describe(session, replace(cfg, retries=1)))
    except TimeoutError:
        logger.warning("scan %s: budget of %.1f s spent", port, budget_s)
    except SensorError as exc:
        logger.warning("scan %s: %s", port, exc.problem)
    return found


async def _describe(session: Session, cfg: Sdi12SensorConfig) -> Found:
    identity: Identity | None = None
    with contextlib.suppress(CommandFailed):
        identity = await session.identify(cfg)
    request = MeasureRequest()
    try:
        count, quantities, named = await _measurement_shape(session, cfg, identity, request)
    except (CommandFailed, CountMismatch):
        count, quantities, named = 1, [("value1", "1")], False
    who = (
        f"{identity.vendor} {identity.model} v{identity.version}"
        + (f" serial {identity.serial}" if identity.serial else "")
        + f" (SDI-12 {identity.sdi12_version})"
        if identity is not None
        else "unidentified sonde (no valid aI! reply)"
    )
    description = f"SDI-12 address {cfg.address}: {who}, M returns {count} value(s)"
    snippet = _snippet(
        cfg.port,
        cfg.address,
        request,
        quantities,
        named=named,
        terminator=cfg.terminator,
        baudrate=cfg.baudrate,
    )
    return Found(cfg.port, "sdi12", description, snippet)


async def probe(sensor: Sdi12SensorConfig, config: GatewayConfig) -> ProbeResult:
    """The driver row's ``probe``: ``probe_sdi12``."""
    return await probe_sdi12(sensor)


scan = scan_sdi12
"""The driver row's ``scan``."""
