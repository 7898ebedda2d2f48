"""A TOML table reader that names the key at fault and refuses unknown keys.

Given a ``problems`` list (``gateway.config.parse_config`` gives one), a table
records what it can without losing its place and goes on, so one run reports
every problem: a value out of range (``check``), every unknown key (``done``), a
wrong type where a default exists (``get``). What leaves nothing to go on (a
required key missing, a wrong type without default) still raises ConfigError,
which the section's parser records at its own boundary. Without a list (a
profile file, a test) the first problem raises, as before.

A secret's value (``password``, ``token``) is never echoed in a message.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from gateway.errors import ConfigError

if TYPE_CHECKING:
    from gateway.config.problems import Problem

__all__ = ["SECRET_KEYS", "Table", "check_unique", "parse_toml", "positive", "read_text", "shown"]

SECRET_KEYS = frozenset({"password", "token"})
"""Keys whose values are secrets: messages about them never show the value."""


def shown(name: str, value: object) -> str:
    """``value`` as a message may show it: a secret not at all."""
    return "(a secret: not shown)" if name in SECRET_KEYS else repr(value)


T = TypeVar("T")
L = TypeVar("L", bound=str)


class Table:
    """A TOML table that remembers which keys were read, to refuse unknown ones."""

    def __init__(
        self,
        data: Any,
        where: str,
        base: Path | None = None,
        problems: list[Problem] | None = None,
    ) -> None:
        if not isinstance(data, dict):
            raise ConfigError(where, "expected a table")
        self.data: dict[str, Any] = data
        self.where = where
        self.base = base
        """The config file's folder: relative paths in it are taken from here."""
        self.used: set[str] = set()
        self.problems = problems
        """Where problems are collected (shared with the tables inside); None: raise."""

    def problem(self, name: str, message: str, *, warning: bool = False) -> None:
        """Record a problem with key ``name`` (raise it, when not collecting)."""
        key = self._key(name) if name else self.where
        if self.problems is None:
            if warning:
                return
            raise ConfigError(key, message)
        from gateway.config.problems import Problem

        self.problems.append(Problem(key, message, "warning" if warning else "error"))

    def record(self, exc: ConfigError) -> None:
        """Record a ConfigError raised inside this table's parsing (raise it, when not
        collecting)."""
        if self.problems is None:
            raise exc
        from gateway.config.problems import Problem

        self.problems.append(Problem(exc.where, exc.problem))

    def _key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def get(
        self, name: str, typ: type[T], default: T | None = None, *, required: bool = False
    ) -> T:
        self.used.add(name)
        if name not in self.data:
            if required or default is None:
                raise ConfigError(self._key(name), "is required but missing")
            return default
        value = self.data[name]
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            problem = f"must be {typ.__name__}, got {type(value).__name__} {shown(name, value)}"
            if default is None or required or self.problems is None:
                raise ConfigError(self._key(name), problem)
            self.problem(name, problem)
            return default
        return value

    def optional(self, name: str, typ: type[T]) -> T | None:
        if name not in self.data:
            self.used.add(name)
            return None
        return self.get(name, typ)

    def one_of(self, name: str, value: str, choices: Sequence[L], problem: str | None = None) -> L:
        """``value`` as the one of ``choices`` it equals, typed as they are (a ``Literal``).

        Raises:
            ConfigError: ``value`` is none of them (``problem`` says so, or lists them).
        """
        for choice in choices:
            if choice == value:
                return choice
        raise ConfigError(
            self._key(name), f"{value!r} {problem or f'is not one of {tuple(choices)}'}"
        )

    def check(self, name: str, value: T, ok: Callable[[T], bool], problem: str) -> T:
        if not ok(value):
            self.problem(name, f"{shown(name, value)} {problem}")
        return value

    def table(self, name: str) -> Table | None:
        self.used.add(name)
        if name not in self.data:
            return None
        return Table(self.data[name], self._key(name), self.base, self.problems)

    def tables(self, name: str) -> list[Table]:
        """The array of tables ``[[name]]`` (empty when absent)."""
        self.used.add(name)
        key = self._key(name)
        raw = self.data.get(name, [])
        if not isinstance(raw, list):
            raise ConfigError(key, f"must be an array of tables ([[{key}]])")
        return [Table(item, f"{key}[{i}]", self.base, self.problems) for i, item in enumerate(raw)]

    def done(self) -> None:
        for name in sorted(set(self.data) - self.used):
            known = ", ".join(sorted(self.used)) or "none"
            self.problem(name, f"is not a known setting (a typo?); known here: {known}")


def check_unique(names: Sequence[str], where: str, field: str, what: str) -> None:
    """Refuse a name used twice in the array of tables at ``where``, naming the second use."""
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise ConfigError(f"{where}[{i}].{field}", f"{name!r} is used by two {what}")
        seen.add(name)


def read_text(path: Path) -> str:
    """A config file's text; unreadable or non-UTF-8 is a ConfigError naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), f"cannot be read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), "is not UTF-8 text") from exc
    return text


def parse_toml(text: str, path: Path) -> dict[str, Any]:
    """TOML text read from ``path``; invalid TOML is a ConfigError naming the file."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"is not valid TOML: {exc}") from exc


def positive(x: float) -> bool:
    return x > 0
