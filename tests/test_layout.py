"""The test folders are packages, so no test folder can shadow the package it tests."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["gateway", "ledger_client", "simulators"])
def test_import_finds_the_real_package_not_its_test_folder(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__file__ is not None
    assert Path(module.__file__).resolve() == REPO / name / "__init__.py"


def test_every_test_folder_is_a_package() -> None:
    folders = [
        d
        for d in (REPO / "tests").rglob("*")
        if d.is_dir() and any(d.glob("test_*.py")) and "__pycache__" not in d.parts
    ]
    assert folders, "no test folders found"
    missing = [str(d.relative_to(REPO)) for d in folders if not (d / "__init__.py").exists()]
    assert missing == []
