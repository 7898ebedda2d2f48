"""Two monitor instances on one PostgreSQL state split a fleet; one is killed (acceptance 5).

A throw-away PostgreSQL cluster, the session's Mosquitto, a real nginx. Two
``sensor-sim fleet`` processes: four boxes that keep running and one box that
will be cut off. Two ``riverseal-monitor run`` processes (instances m1, m2) in
one shared-subscription group, state in PostgreSQL, 3 s leases:

1. every box has exactly one owner, both instances own some, and in a window of
   steady running each box's checkpoints are verified by its owner only;
2. the cut-off box's fleet is killed (-9), then its owner is killed (-9): the
   survivor holds every lease within a lease period and a renewal, verifies the
   boxes it took over, and the cut-off box's ``silent`` and ``box-silent``
   alerts are raised exactly once (one row each, one JSON line in all the
   instances' outputs).

``test_leases_alerts_and_forwarding`` checks the same rules on the state alone:
fair shares, excess given back, expired leases taken over, alerts unique among
open ones, boxes only moving forward, notes forwarded with NOTIFY.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from riverseal_monitor.follow import Alert, GapSpan, Reading, Verified
from riverseal_monitor.state_postgres import PostgresState
from tests.monitor.fleet_monitor import (
    MONITOR,
    boxes_of,
    monitor_toml,
    run_monitor,
    start_fleet,
)
from tests.servers.postgres import Postgres
from tests.servers.web_server import WebServer

LEASE_S = 3.0
ALLOWANCE_S = 4.0


def query(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as c:
        try:
            return list(c.execute(sql, args).fetchall())
        except psycopg.errors.UndefinedTable:
            return []  # no instance has made the schema yet


def until(what: str, check: Callable[[], Any], s: float, *logs: Path) -> Any:
    deadline = time.monotonic() + s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p}:\n{p.read_text()[-2500:]}" for p in logs if p.exists())
            raise AssertionError(f"{what}: not within {s} s\n{tails}")
        time.sleep(0.1)


def verified_by(log: Path, since: int) -> set[str]:
    """Origins whose checkpoints this instance verified after byte ``since`` of its log."""
    text = log.read_bytes()[since:].decode("utf-8", "replace")
    return set(re.findall(r"riverseal_monitor\.monitor: (\S+): verified checkpoint", text))


@pytest.mark.slow  # two fleets, two monitors, a takeover: about 30 s
def test_two_instances_split_a_fleet_and_take_over(
    tmp_path: Path,
    mosquitto: tuple[str, int],
    web_server: WebServer,
    postgres: Postgres,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    to = f"{web_server.url}/pg-fleet"
    steady, cut = tmp_path / "fleet-a", tmp_path / "fleet-b"
    start_fleet(procs, to=to, data=steady, broker=mosquitto, boxes=4, seed=61, rate=2)
    doomed_fleet = start_fleet(procs, to=to, data=cut, broker=mosquitto, boxes=1, seed=62, rate=2)
    boxes = boxes_of(steady, to) + boxes_of(cut, to)
    origins = sorted(o for o, _, _ in boxes)
    (victim,) = [o for o, _, _ in boxes_of(cut, to)]
    assert len(set(origins)) == 5

    url = postgres.url
    dirs, mons = {}, {}
    for name in ("m1", "m2"):
        cfg = monitor_toml(
            tmp_path / name / "monitor.toml",
            url,
            boxes,
            mosquitto,
            f'instance = "{name}"\nlease_s = {LEASE_S}\n',
            f'allowance_s = {{ "ph-1" = {ALLOWANCE_S} }}\n',
        )
        dirs[name] = cfg.parent
        mons[name] = run_monitor(cfg, "monitor", procs)
    logs = [d / "monitor.log" for d in dirs.values()]

    # 1. The boxes split, each with one owner; both instances hold some.
    def split() -> dict[str, str] | None:
        rows = query(url, "SELECT origin, owner FROM leases WHERE expires_s > %s", time.time())
        owners = dict(rows)
        if sorted(owners) != origins or set(owners.values()) != {"m1", "m2"}:
            return None
        sizes = dict(query(url, "SELECT origin, size FROM boxes"))
        return owners if all(sizes.get(o, 0) > 0 for o in origins) else None

    owners = until("five boxes verified, split between m1 and m2", split, 40, *logs)
    time.sleep(LEASE_S)  # past any hand-over at start
    owners = until("a stable split", split, 5, *logs)
    marks = {n: (d / "monitor.log").stat().st_size for n, d in dirs.items()}
    time.sleep(3)
    assert split() == owners, "the split moved while nothing changed"
    for name, d in dirs.items():
        mine = {o for o, w in owners.items() if w == name}
        assert verified_by(d / "monitor.log", marks[name]) == mine, (name, mine)
    # The broker hands each instance about half the announcements; those of the other's
    # boxes went on through the database (NOTIFY), or the owner would not verify each
    # checkpoint so promptly: every box advanced in the window above.

    # 2. The cut-off box's fleet dies, then the instance that owns the box.
    doomed = owners[victim]
    survivor = "m2" if doomed == "m1" else "m1"
    taken = sorted(o for o, w in owners.items() if w == doomed)
    sizes_before = dict(query(url, "SELECT origin, size FROM boxes"))
    doomed_fleet.kill()
    doomed_fleet.wait()
    time.sleep(0.5)
    mons[doomed].kill()
    mons[doomed].wait()
    killed = time.monotonic()
    mark = (dirs[survivor] / "monitor.log").stat().st_size

    def all_survivor() -> bool:
        rows = query(url, "SELECT origin, owner FROM leases WHERE expires_s > %s", time.time())
        return dict(rows) == dict.fromkeys(origins, survivor)

    until("the survivor holds every lease", all_survivor, 2 * LEASE_S + 2, *logs)
    took = time.monotonic() - killed
    assert took <= LEASE_S + LEASE_S / 3 + 1.5, f"taken over after {took:.1f} s"

    # The boxes it took over are verified by it (the cut-off one has nothing new).
    alive = [o for o in taken if o != victim]
    until(
        "the taken-over boxes verified by the survivor",
        lambda: set(alive) <= verified_by(dirs[survivor] / "monitor.log", mark),
        10,
        *logs,
    )
    sizes_after = dict(query(url, "SELECT origin, size FROM boxes"))
    assert all(sizes_after[o] > sizes_before[o] for o in alive)

    # The cut-off box's alerts: raised once each, by whoever saw them first.
    def victim_alerts() -> list[tuple[Any, ...]]:
        return query(
            url,
            "SELECT kind, key, raised_by FROM alerts WHERE origin = %s ORDER BY id",
            victim,
        )

    until(
        "silent and box-silent for the cut-off box",
        lambda: {k for k, _, _ in victim_alerts()} >= {"silent", "box-silent"},
        ALLOWANCE_S + 3 * 1.0 + 10,
        *logs,
    )
    time.sleep(2)  # a few more ticks: nothing raised twice
    rows = victim_alerts()
    assert sorted(k for _, k, _ in rows) == ["box-silent", "silent:ph-1"], rows
    lines = [
        json.loads(x)
        for d in dirs.values()
        for x in (d / "monitor.jsonl").read_text().splitlines()
        if x.strip()
    ]
    raised = sorted(a["key"] for a in lines if a["event"] == "alert" and a["origin"] == victim)
    assert raised == ["box-silent", "silent:ph-1"], lines
    # No alert for a box that kept running, across the kill and the takeover.
    others = query(url, "SELECT origin, key FROM alerts WHERE origin <> %s", victim)
    assert others == [], others
    assert mons[survivor].poll() is None

    # The CLI reads the same database: every box with the survivor, the two alerts.
    toml = str(dirs[survivor] / "monitor.toml")
    status = subprocess.run(
        [*MONITOR, "status", "--json", "--config", toml], capture_output=True, check=True
    )
    doc = json.loads(status.stdout)
    assert {b["origin"]: b["owner"] for b in doc["boxes"]} == dict.fromkeys(origins, survivor)
    assert {b["origin"]: b["open_alerts"] for b in doc["boxes"]}[victim] == 2
    listed = subprocess.run(
        [*MONITOR, "alerts", "--json", "--open", "--config", toml], capture_output=True, check=True
    )
    keys = sorted(json.loads(x)["key"] for x in listed.stdout.decode().splitlines())
    assert keys == ["box-silent", "silent:ph-1"]


async def test_leases_alerts_and_forwarding(postgres: Postgres) -> None:
    origins = [f"riverseal/rs-{i:012x}" for i in range(5)]
    async with (
        PostgresState(postgres.url, instance="a") as a,
        PostgresState(postgres.url, instance="b") as b,
    ):
        # Alone, a takes every box; once b is counted, a gives back all beyond its share.
        assert await a.claim(origins, "a", 2.0) == set(origins)
        assert await b.claim(origins, "b", 2.0) == set()  # nothing free yet
        kept = await a.claim(origins, "a", 2.0)
        assert len(kept) == 3
        assert await b.claim(origins, "b", 2.0) == set(origins) - kept
        assert sorted((await a.owners()).items()) == sorted(
            [(o, "a") for o in kept] + [(o, "b") for o in set(origins) - kept]
        )
        # a stops renewing: after its lease, b (now the only live instance) takes all.
        await asyncio.sleep(2.2)
        assert await b.claim(origins, "b", 2.0) == set(origins)

        # One open alert per (origin, key), whoever raises it; a cleared one may return.
        alert = Alert(origins[0], "silent", "silent:ph-1", 1.0, "no reading")
        assert await a.raise_alert(alert) is True
        assert await b.raise_alert(alert) is False
        assert await b.open_alerts() == {(origins[0], "silent:ph-1")}
        assert await a.clear(origins[0], ["silent:ph-1", "box-silent"], 2.0) == ["silent:ph-1"]
        assert await b.raise_alert(alert) is True

        # The verified state only moves forward.
        big = Verified(9, b"\x01" * 32, (b"\x02" * 32,), "note 9")
        small = Verified(4, b"\x03" * 32, (b"\x04" * 32,), "note 4")
        await a.commit(origins[1], big, [], [], None, 3.0)
        await b.commit(origins[1], small, [], [], None, 4.0)
        assert await a.load(origins[1]) == big

        # What the page reads: stations with their open alerts, a station's series.
        more = Verified(11, b"\x05" * 32, (b"\x06" * 32,), "note 11")
        reading = Reading(
            origins[1], "ph-1", 9, "2026-12-06T00:00:09Z", 9.0, (("ph", "pH", 7.25, 3),)
        )
        gap = GapSpan(
            origins[1], "ph-1", 10, "2026-12-06T00:00:09Z", "2026-12-06T00:01:00Z", "probe-lost"
        )
        await b.commit(origins[1], more, [reading], [gap], None, 5.0)
        series = await a.series(origins[1], 0.0, 10)
        assert series == {
            "sensors": {
                "ph-1": {
                    "unit": "ph [pH]",
                    "points": [[9.0, 7.25, 3]],
                    "gaps": [
                        {
                            "start": "2026-12-06T00:00:09Z",
                            "end": "2026-12-06T00:01:00Z",
                            "reason": "probe-lost",
                        }
                    ],
                }
            },
            "checkpoint": {"size": 11, "verified_s": 5.0},
            "anchors": [],
        }
        stations = {st["origin"]: st for st in await a.stations()}
        assert stations[origins[1]]["verified_size"] == 11
        assert stations[origins[1]]["owner"] == "b" and stations[origins[1]]["open"] == []

        # A note forwarded by one instance reaches the others' listeners.
        async with contextlib.aclosing(b.forwarded()) as heard:

            async def first() -> str:
                return await anext(heard)

            listening = asyncio.create_task(first())
            await asyncio.sleep(0.3)  # LISTEN is in place
            note = f"{origins[2]}\n12\nroot\n\n— sig\n"
            await a.forward(note)
            assert await asyncio.wait_for(listening, 5) == note
