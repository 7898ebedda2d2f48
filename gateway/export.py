"""Export a bundle: a contiguous range of entries with every proof a regulator needs.

Entries are chosen by receive time, then widened to the contiguous index
range between the first and last match (a bundle never has holes). Each
entry is proven against the first checkpoint that covers it; consecutive
checkpoints are linked by consistency proofs; the checkpoint just before the
range is included too, so a regulator can link this bundle to the last one.
If the newest entries are not covered by any checkpoint yet, one is signed
first (``seal``), so nothing in the range is left unproven.
"""

from __future__ import annotations

import bisect
import itertools
import json
import time
from collections.abc import Callable

from ledger_client import merkle
from ledger_client.bundle import AnchorReceipt, Bundle, BundleEntry, ConsistencyProof, DeviceKey
from ledger_client.records import format_time

from .errors import GatewayError
from .log import Log
from .store import CheckpointRow

__all__ = ["ExportEmpty", "export_bundle"]

_VERSION = "riverseal 0.1.0"


class ExportEmpty(GatewayError):
    """No entries in the requested time window."""

    hint = "widen --since/--until, or check that the gateway is logging (gateway status)"


async def export_bundle(
    log: Log,
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    seal: bool = True,
    clock: Callable[[], int] = time.time_ns,
) -> Bundle:
    store = log.store
    if seal:
        await log.checkpoint()
    span = await store.index_range(since_ns, until_ns)
    if span is None:
        raise ExportEmpty("no entries in the requested time window")
    first, last = span
    all_cps = await store.checkpoints()
    sizes = [c.size for c in all_cps]
    # The checkpoints that cover the range, plus the one just before it.
    lo = bisect.bisect_right(sizes, first)  # first checkpoint with size > first
    hi = bisect.bisect_right(sizes, last)  # first checkpoint with size > last
    if hi == len(sizes):
        last = sizes[-1] - 1 if sizes else -1
        if last < first:
            raise ExportEmpty("no checkpoint covers the requested entries yet")
        hi = bisect.bisect_right(sizes, last)
    cps: list[CheckpointRow] = all_cps[max(lo - 1, 0) : hi + 1]
    cp_sizes = [c.size for c in cps]

    # Plan every proof first, then fetch all subtree hashes it needs in a few queries.
    incl_plans: list[tuple[int, int, list[list[merkle.Node]]]] = []
    for i in range(first, last + 1):
        size = cp_sizes[bisect.bisect_right(cp_sizes, i)]
        incl_plans.append((i, size, merkle.inclusion_plan(i, size)))
    cons_plans = [
        (a.size, b.size, merkle.consistency_plan(a.size, b.size))
        for a, b in itertools.pairwise(cps)
    ]
    wanted = {n for _, _, plan in incl_plans for el in plan for n in el}
    wanted.update(n for _, _, plan in cons_plans for el in plan for n in el)
    hashes = await store.nodes(wanted)

    def resolve(plan: list[list[merkle.Node]]) -> tuple[bytes, ...]:
        return tuple(merkle.fold([hashes[n] for n in el]) for el in plan)

    entries = []
    plan_iter = iter(incl_plans)
    async for row in store.entries(first, last):
        idx, size, plan = next(plan_iter)
        if idx != row.index:
            raise GatewayError(f"log database has a hole at index {idx}")
        entries.append(BundleEntry(row.index, row.data, size, resolve(plan)))
    consistency = [ConsistencyProof(a, b, resolve(p)) for a, b, p in cons_plans]

    in_bundle = set(cp_sizes)
    anchors = [
        AnchorReceipt(a.checkpoint, a.backend, a.digest, a.state, json.loads(a.receipt))
        for a in await store.anchors()
        if a.checkpoint in in_bundle and a.state != "pending"
    ]
    vkey = await store.get_meta("vkey") or log.key.vkey
    created = await store.get_meta("created")
    return Bundle(
        origin=log.key.origin,
        device=log.key.device_id,
        keys=(DeviceKey(vkey, created, None),),
        entries=tuple(entries),
        checkpoints=tuple(c.note for c in cps),
        consistency=tuple(consistency),
        anchors=tuple(anchors),
        exported=format_time(clock()),
        exporter=_VERSION,
    )
