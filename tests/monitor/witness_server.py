"""A real witness service for tests: key file (0600), log list and state in ``tmp``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from ledger_client.note import Verifier
from ledger_client.witness import WitnessSigner
from riverseal_monitor.witness import Witness, WitnessConfig

__all__ = ["running_witness", "witness_files"]


def witness_files(
    folder: Path, name: str, logs: dict[str, list[Verifier]]
) -> tuple[WitnessConfig, WitnessSigner]:
    """Write a fresh witness key and a log list into ``folder``; the config that uses them."""
    folder.mkdir(parents=True, exist_ok=True)
    signer = WitnessSigner.generate(name)
    key = folder / "witness.key"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(signer.to_skey() + "\n")
    lines = [f"log {origin} " + " ".join(v.to_vkey() for v in vs) for origin, vs in logs.items()]
    (folder / "logs.txt").write_text("# logs this witness follows\n" + "\n".join(lines) + "\n")
    config = WitnessConfig(
        key_file=key, logs_file=folder / "logs.txt", db_path=folder / "state.sqlite", port=0
    )
    return config, signer


@asynccontextmanager
async def running_witness(config: WitnessConfig) -> AsyncIterator[Witness]:
    """The witness serving on a free port until the block ends."""
    stop = asyncio.Event()
    async with Witness(config) as witness:
        task = asyncio.create_task(witness.serve(stop), name="test.witness")
        try:
            yield witness
        finally:
            stop.set()
            await task
