"""The JSON-RPC client against real anvil nodes: failover, the chain-id guard, error kinds.

The endpoint that answers HTTP 503 is a real HTTP server on 127.0.0.1 (what a
reverse proxy says when its node is down); the dead endpoints are closed ports.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gateway.anchoring.evm_rpc import ChainMismatch, EvmRpc, RpcError
from gateway.errors import LedgerRejected, LedgerUnavailable
from tests.servers.anvil_node import AnvilNode, running_anvil


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


class _Unavailable(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = b"<html>503 no backend</html>"
        self.send_response(503)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def proxy_503() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    thread = threading.Thread(target=server.serve_forever, name="test.http503", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_failover_skips_dead_endpoints_and_keeps_the_one_that_answered(
    anvil: AnvilNode, proxy_503: str
) -> None:
    async with EvmRpc([dead_url(), proxy_503, anvil.url], anvil.chain_id, timeout_s=2) as rpc:
        assert int(await rpc.call("eth_chainId"), 16) == anvil.chain_id
        assert rpc.url == anvil.url
        assert int(await rpc.call("eth_blockNumber"), 16) >= 0
        assert rpc.url == anvil.url


async def test_no_endpoint_answering_is_retryable_and_names_each(proxy_503: str) -> None:
    dead = dead_url()
    async with EvmRpc([dead, proxy_503], 31337, timeout_s=2) as rpc:
        with pytest.raises(LedgerUnavailable) as info:
            await rpc.call("eth_blockNumber")
    assert not isinstance(info.value, LedgerRejected)
    assert dead in str(info.value)
    assert f"{proxy_503}: eth_chainId: HTTP 503" in str(info.value)


async def test_an_endpoint_on_another_chain_is_refused_with_a_clear_error(
    anvil: AnvilNode,
) -> None:
    async with EvmRpc([anvil.url], 1) as rpc:
        with pytest.raises(ChainMismatch) as info:
            await rpc.call("eth_blockNumber")
    assert isinstance(info.value, LedgerRejected)  # a retry will not fix a wrong chain
    assert f"{anvil.url} serves chain {anvil.chain_id}, not the configured chain_id 1" in str(
        info.value
    )
    assert "chain_id" in info.value.diagnostics()  # the hint tells the technician where


async def test_a_wrong_chain_endpoint_is_passed_over_for_the_right_one(
    tmp_path: Path, anvil: AnvilNode
) -> None:
    with running_anvil(tmp_path, chain_id=5, block_time=None) as other:
        async with EvmRpc([other.url, anvil.url], anvil.chain_id) as rpc:
            assert int(await rpc.call("eth_chainId"), 16) == anvil.chain_id
            assert rpc.url == anvil.url


async def test_a_json_rpc_error_is_the_nodes_answer_not_a_failover(anvil: AnvilNode) -> None:
    dead = dead_url()
    async with EvmRpc([anvil.url, dead], anvil.chain_id) as rpc:
        with pytest.raises(RpcError) as info:
            await rpc.call("eth_sendRawTransaction", ["0x00"])
        assert rpc.url == anvil.url
    assert info.value.method == "eth_sendRawTransaction"
    assert isinstance(info.value, LedgerRejected)


async def test_a_node_that_comes_back_is_used_again(tmp_path: Path) -> None:
    with running_anvil(tmp_path, block_time=None) as node:
        async with EvmRpc([node.url], node.chain_id, timeout_s=2) as rpc:
            assert int(await rpc.call("eth_chainId"), 16) == node.chain_id
            node.stop()
            with pytest.raises(LedgerUnavailable):
                await rpc.call("eth_blockNumber")
            node.start()
            assert int(await rpc.call("eth_blockNumber"), 16) >= 0
