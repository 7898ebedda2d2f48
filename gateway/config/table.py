"""A TOML table reader that names the key at fault and refuses unknown keys."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ConfigError

__all__ = ["Table", "positive"]

T = TypeVar("T")


class Table:
    """A TOML table that remembers which keys were read, to refuse unknown ones."""

    def __init__(self, data: Any, where: str, base: Path | None = None) -> None:
        if not isinstance(data, dict):
            raise ConfigError(where, "expected a table")
        self.data: dict[str, Any] = data
        self.where = where
        self.base = base
        """The config file's folder: relative paths in it are taken from here."""
        self.used: set[str] = set()

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
            raise ConfigError(
                self._key(name), f"must be {typ.__name__}, got {type(value).__name__} {value!r}"
            )
        return value

    def optional(self, name: str, typ: type[T]) -> T | None:
        if name not in self.data:
            self.used.add(name)
            return None
        return self.get(name, typ)

    def check(self, name: str, value: T, ok: Callable[[T], bool], problem: str) -> T:
        if not ok(value):
            raise ConfigError(self._key(name), f"{value!r} {problem}")
        return value

    def table(self, name: str) -> Table | None:
        self.used.add(name)
        return Table(self.data[name], self._key(name), self.base) if name in self.data else None

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(self._key(unknown[0]), "is not a known setting (a typo?)")


def positive(x: float) -> bool:
    return x > 0
