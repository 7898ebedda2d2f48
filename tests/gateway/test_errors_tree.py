"""gateway/errors.py draws every exception class the gateway defines."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import gateway
from gateway import errors


def test_every_gateway_error_subclass_is_in_the_drawn_tree() -> None:
    found: set[type[BaseException]] = set()
    for info in pkgutil.walk_packages(gateway.__path__, "gateway."):
        if info.name == "gateway.__main__":
            continue  # runs the CLI
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, errors.GatewayError) and obj.__module__ == info.name:
                found.add(obj)
    assert len(found) > 30
    doc = errors.__doc__ or ""
    missing = sorted(c.__name__ for c in found if f" {c.__name__} " not in doc)
    assert not missing, f"not in gateway/errors.py's tree: {missing}"
