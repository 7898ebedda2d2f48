"""``[[anchor.rfc3161]]`` tables: RFC 3161 timestamp authorities to anchor checkpoints to.

::

    [[anchor.rfc3161]]
    name = "tsa-a"                         # the anchor's label is "rfc3161:tsa-a"
    url = "https://tsa.example/tsr"        # POST application/timestamp-query
    roots = "/etc/riverseal/tsa-a.pem"     # root certificate(s) the TSA must chain to
    required = true                        # false: an optional, best-effort TSA
    timeout_s = 10.0

Every token is checked against ``roots`` (absolute path, PEM) before it is
recorded. A TSA that fails is retried with back-off either way; ``required``
says whether its failure is an alarm (the station is missing an anchor it
promised) or only a warning in status.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigError
from gateway.toml_table import Table, check_unique, positive

from .urls import url_problem

__all__ = ["Rfc3161Config", "parse_rfc3161"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", re.ASCII)


@dataclass(frozen=True)
class Rfc3161Config:
    name: str
    """Short label, unique among the TSAs; part of the anchor's backend label."""
    url: str
    """The TSA's HTTP(S) endpoint."""
    roots: Path
    """PEM file of the root certificate(s) the TSA's signing certificate must chain to."""
    required: bool = True
    """A required TSA that keeps failing is an alarm; an optional one only a warning."""
    timeout_s: float = 10.0
    """Longest wait for one request and its reply."""


def _parse_one(t: Table) -> Rfc3161Config:
    name = t.get("name", str, required=True)
    t.check("name", name, lambda s: bool(_NAME.fullmatch(s)), "must be 1–63 of A-Z a-z 0-9 . _ -")
    url = t.get("url", str, required=True)
    problem = url_problem(url)
    if problem:
        t.problem("url", problem)
    roots_text = t.get("roots", str, required=True)
    roots = Path(roots_text)
    t.check("roots", roots_text, lambda _: roots.is_absolute(), "must be an absolute path")
    cfg = Rfc3161Config(
        name=name,
        url=url,
        roots=roots,
        required=t.get("required", bool, Rfc3161Config.required),
        timeout_s=t.check(
            "timeout_s", t.get("timeout_s", float, Rfc3161Config.timeout_s), positive, "must be > 0"
        ),
    )
    t.done()
    return cfg


def _guarded(t: Table) -> Rfc3161Config | None:
    try:
        return _parse_one(t)
    except ConfigError as exc:  # recorded: the other TSAs are still checked
        t.record(exc)
        return None


def parse_rfc3161(anchor: Table) -> tuple[Rfc3161Config, ...]:
    """The ``rfc3161`` array of the ``[anchor]`` table (marks the key as read)."""
    tsas = tuple(c for c in map(_guarded, anchor.tables("rfc3161")) if c is not None)
    check_unique([tsa.name for tsa in tsas], f"{anchor.where}.rfc3161", "name", "TSAs")
    return tsas
