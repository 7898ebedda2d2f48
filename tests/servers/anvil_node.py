"""A real anvil node (Foundry's local Ethereum node, from the npm package) for the tests.

``scripts/setup --dev`` installs it into ``.tools/`` (``ANVIL`` in the
environment overrides the path). Each node listens on a free 127.0.0.1 port
and keeps its chain in ``--state`` so it can be stopped (or killed) and
started again on the same port with its blocks intact.

The defaults make finality quick and deterministic enough for tests: a block
every 0.5 s, and ``--slots-in-an-epoch 1``, so anvil's ``finalized`` block is
the head minus 2.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

__all__ = ["AnvilNode", "anvil_binary", "evm_toml", "running_anvil"]

REPO = Path(__file__).resolve().parents[2]
_BUNDLED = REPO / ".tools" / "node_modules" / ".bin" / "anvil"


class AnvilMissing(RuntimeError):
    """anvil is not installed (the fixture turns this into a test failure)."""


def anvil_binary() -> str:
    """The anvil executable: $ANVIL, then .tools/ (scripts/setup --dev), then $PATH."""
    for candidate in (os.environ.get("ANVIL"), str(_BUNDLED), shutil.which("anvil")):
        if candidate and Path(candidate).exists():
            return candidate
    raise AnvilMissing("anvil is not installed: run scripts/setup --dev (installs it in .tools/)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AnvilNode:
    """One anvil process. ``start``/``stop``/``kill`` may be repeated; the port stays.

    Args:
        workdir: holds the state file and the log.
        block_time: seconds between blocks; None mines one block per transaction
            (automine); ``no_mining=True`` mines only when asked (``mine``).
        slots_in_an_epoch: anvil's ``finalized`` block is the head minus twice this.
        chain_id: the EIP-155 chain id.
        extra: more command-line options.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        block_time: float | None = 0.5,
        slots_in_an_epoch: int = 1,
        chain_id: int = 31337,
        no_mining: bool = False,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.workdir = workdir
        self.port = _free_port()
        self.chain_id = chain_id
        self.state = workdir / "anvil-state.json"
        self.log = workdir / "anvil.log"
        args = [
            anvil_binary(),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--chain-id",
            str(chain_id),
            "--slots-in-an-epoch",
            str(slots_in_an_epoch),
            "--state",
            str(self.state),
            *extra,
        ]
        if no_mining:
            args.append("--no-mining")
        elif block_time is not None:
            args += ["--block-time", str(block_time)]
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None
        self._ids = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 15.0) -> None:
        if self.running:
            return
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.args, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"anvil exited early:\n{self.log.read_text()[-3000:]}")
            try:
                self.rpc("eth_chainId")
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError("anvil did not start answering") from None
                time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM: anvil writes its state file and exits."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: nothing is written; the chain is what the last dump held."""
        self._end(signal.SIGKILL)

    def _end(self, sig: signal.Signals) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def rpc(self, method: str, *params: Any) -> Any:
        """One JSON-RPC call; raises RuntimeError on an error reply."""
        self._ids += 1
        body = {"jsonrpc": "2.0", "id": self._ids, "method": method, "params": list(params)}
        reply = httpx.post(self.url, json=body, timeout=10).json()
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def fund(self, address: str, ether: int = 100) -> None:
        self.rpc("anvil_setBalance", address, hex(ether * 10**18))

    def mine(self, blocks: int = 1) -> None:
        self.rpc("anvil_mine", hex(blocks))

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def wait_for_block(self, number: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.block_number() < number:
            if time.monotonic() > deadline:
                raise AssertionError(f"anvil did not reach block {number} in {timeout} s")
            time.sleep(0.05)

    def wait_for_receipt(self, tx_hash: str, timeout: float = 10.0) -> dict[str, Any]:
        """The receipt of ``tx_hash`` once it is mined. Automine answers
        eth_sendRawTransaction before the block is made, so tests wait here."""
        deadline = time.monotonic() + timeout
        while (receipt := self.rpc("eth_getTransactionReceipt", tx_hash)) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{tx_hash} was not mined in {timeout} s")
            time.sleep(0.02)
        return dict(receipt)

    def transactions_from(self, address: str) -> list[dict[str, Any]]:
        """Every mined transaction sent by ``address``, oldest first (scans every block)."""
        out = []
        for n in range(self.block_number() + 1):
            block = self.rpc("eth_getBlockByNumber", hex(n), True)
            out += [tx for tx in block["transactions"] if tx["from"].lower() == address.lower()]
        return out


@contextlib.contextmanager
def running_anvil(workdir: Path, **options: Any) -> Iterator[AnvilNode]:
    """A started AnvilNode, stopped on exit whatever happened."""
    workdir.mkdir(parents=True, exist_ok=True)
    node = AnvilNode(workdir, **options)
    try:
        node.start()
        yield node
    finally:
        node.kill()


def evm_toml(
    node: AnvilNode, *, name: str = "anvil", key_file: str = "anchor.key", **settings: Any
) -> str:
    """An ``[[anchor.evm]]`` table for a station anchoring to ``node`` (TOML text).

    ``settings`` are further keys of the table, e.g. ``confirmations=2``.
    """
    lines = [
        "[[anchor.evm]]",
        f'name = "{name}"',
        f"chain_id = {node.chain_id}",
        f'rpc = ["{node.url}"]',
        f'key_file = "{key_file}"',
    ]
    for key, value in settings.items():
        if isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        elif isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        else:
            lines.append(f"{key} = {value!r}")
    return "\n".join(lines) + "\n"
