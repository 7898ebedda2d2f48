"""Config problems, reported all at once like a compiler's: file, line, key path, message, hint.

tomllib gives no positions, so ``key_lines`` finds the line of a key path by a
small scan of the source text (table headers ``[x]`` / ``[[x]]`` and ``key =``
lines): good enough to point a technician at the line. Every hint names a
section of docs/operations.md that exists (tests/gateway/test_check_config.py
checks each anchor in ``HINTS``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "HINTS",
    "Problem",
    "Severity",
    "format_problem",
    "hint_for",
    "key_lines",
    "locate",
    "toml_error_line",
]

Severity = Literal["error", "warning"]

OPS = "docs/operations.md"
HINTS = {
    "config": f"{OPS}#configuration",
    "check": f"{OPS}#checking-the-configuration",
    "secrets": f"{OPS}#secrets",
    "sensor": f"{OPS}#installing-sensors-scan-then-probe",
    "mqtt": f"{OPS}#mqtt-sensors",
    "anchor": f"{OPS}#anchoring",
    "qc": f"{OPS}#quality-flags-qartod",
    "data_dir": f"{OPS}#the-services-sandbox",
    "key": f"{OPS}#provisioning",
    "uplink": f"{OPS}#the-uplink-publishing-as-the-log-grows",
}
"""The doc sections hints point to, by topic (anchors as GitHub renders headings)."""

_SECRET_KEY = re.compile(r"(^|\.)(password|token)(_file|_env|_credential)?$")


def hint_for(key: str) -> str:
    """The doc section that explains ``key`` (a key path such as ``sensor[3].port``)."""
    head = key.split(".", 1)[0].split("[", 1)[0]
    if _SECRET_KEY.search(key):
        return HINTS["secrets"]
    if key == "device.data_dir":
        return HINTS["data_dir"]
    if key == "device.key_file":
        return HINTS["key"]
    if key.startswith("anchor.evm") and key.endswith("key_file"):
        return HINTS["key"]
    return HINTS.get(head, HINTS["config"])


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the config: where (key path, line), what, and where to read more."""

    key: str
    """The key path, e.g. ``sensor[3].baudrate``, ``anchor.rfc3161[0].url`` (``""``: the file)."""
    message: str
    """What is wrong and what is allowed; never a secret's value."""
    severity: Severity = "error"
    line: int | None = None
    hint: str = ""
    """A doc section (``docs/operations.md#...``); empty: ``hint_for(key)``."""

    @property
    def doc(self) -> str:
        return self.hint or hint_for(self.key)


def format_problem(path: str, p: Problem) -> str:
    """``station.toml:12: sensor[3].baudrate: 96000 is not one of (...)`` and its hint."""
    where = f"{path}:{p.line}" if p.line is not None else path
    label = "warning: " if p.severity == "warning" else ""
    key = f"{p.key}: " if p.key else ""
    return f"{where}: {label}{key}{p.message}\n    see {p.doc}"


_TOML_POS = re.compile(r"\(at line (\d+), column (\d+)\)")


def toml_error_line(message: str) -> int | None:
    """The line tomllib's error message names (``... (at line 3, column 7)``)."""
    m = _TOML_POS.search(message)
    return int(m.group(1)) if m else None


def _split_key(text: str) -> list[str]:
    """A TOML dotted key split into its parts, quotes removed (``a."b.c".d``: a, b.c, d)."""
    parts: list[str] = []
    cur = ""
    quote = ""
    for ch in text.strip():
        if quote:
            if ch == quote:
                quote = ""
            else:
                cur += ch
        elif ch in "\"'":
            quote = ch
        elif ch == ".":
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    parts.append(cur.strip())
    return parts


def _depth(text: str) -> tuple[int, str]:
    """Brackets opened minus closed on a line outside strings and comments, and the
    key part before the first ``=`` outside strings (``""`` if none)."""
    depth, quote, key, i = 0, "", "", 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\" and quote == '"':
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "=" and not key and depth == 0:
            key = text[:i]
        i += 1
    return depth, key


def key_lines(text: str) -> dict[str, int]:
    """Key path → 1-based line where it is set (or its table starts), by a scan of ``text``."""
    found: dict[str, int] = {}
    arrays: dict[str, int] = {}  # resolved array-of-tables path -> items seen so far
    table: list[str] = []
    open_brackets = 0
    multiline = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if multiline:  # inside a """ or ''' string: nothing here is a key
            if line.count(multiline) % 2 == 1:
                multiline = ""
            continue
        if open_brackets > 0:  # the rest of a multi-line array or inline table
            open_brackets += _depth(line)[0]
            continue
        if line.startswith("[") and not line.startswith("[["):
            table = _resolve(_split_key(line[1 : line.find("]")]), arrays)
            found.setdefault(".".join(table), number)
        elif line.startswith("[["):
            parts = _split_key(line[2 : line.find("]]")])
            parent = _resolve(parts[:-1], arrays)
            name = ".".join([*parent, parts[-1]])
            arrays[name] = arrays.get(name, 0) + 1
            table = [*parent, f"{parts[-1]}[{arrays[name] - 1}]"]
            found.setdefault(".".join(table), number)
        else:
            depth, key = _depth(line)
            if key:
                path = ".".join([*table, *_split_key(key)])
                found.setdefault(path, number)
                for quote in ('"""', "'''"):
                    if line.count(quote) % 2 == 1:
                        multiline = quote
                open_brackets = max(depth, 0)
    return found


def _resolve(parts: Iterable[str], arrays: dict[str, int]) -> list[str]:
    """Header parts with each array-of-tables level pointed at its latest item."""
    out: list[str] = []
    for part in parts:
        name = ".".join([*out, part])
        out.append(f"{part}[{arrays[name] - 1}]" if name in arrays else part)
    return out


_INDEX = re.compile(r"\[\d+\]$")


def locate(lines: dict[str, int], key: str) -> int | None:
    """The line of ``key``, else of the nearest enclosing key or table that is written."""
    path = key
    while path:
        if path in lines:
            return lines[path]
        trimmed = _INDEX.sub("", path)
        if trimmed != path and trimmed in lines:
            return lines[trimmed]
        path = trimmed.rpartition(".")[0] if trimmed == path else trimmed
    return None
