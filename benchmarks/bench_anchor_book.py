"""What reading a box's anchors costs the monitor: ``AnchorBook.read`` on a full manifest.

    flock /tmp/bench.lock .venv/bin/python benchmarks/bench_anchor_book.py [--anchored 10000]

A manifest as a box publishes it at its limit (``--anchored`` checkpoints, each
with a ``local`` and an ``evm`` receipt; 10,000 is the manifest's cap), read by a
fresh book (every note verified, every receipt checked: a monitor's first read,
or a takeover), then again unchanged (every ``manifest_interval_s``), then with
one new anchored checkpoint. Prints the manifest's size and the time of each
read; asserts nothing.
"""

from __future__ import annotations

import argparse
import base64
import time

from ledger_client.bundle import AnchorReceipt
from ledger_client.bundle_v2 import Manifest
from ledger_client.checkpoint import Checkpoint
from ledger_client.evm import anchor_calldata
from ledger_client.note import Signer, sign_note
from riverseal_monitor.anchors import AnchorBook

ORIGIN = "riverseal/rs-bench"


def manifest(signer: Signer, sizes: range) -> bytes:
    notes, anchors = [], []
    for size in sizes:
        body = f"{ORIGIN}\n{size}\n{base64.b64encode(size.to_bytes(32, 'big')).decode()}\n"
        notes.append(sign_note(body, signer))
        digest = Checkpoint.parse(body).digest()
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1.79e9 + size))
        anchors.append(
            AnchorReceipt(
                size, "local", digest, "final", {"journal": "j", "seq": size, "time": when}
            )
        )
        calldata = "0x" + anchor_calldata(digest, size).hex()
        anchors.append(
            AnchorReceipt(
                size, "evm:1", digest, "final", {"calldata": calldata, "block_time": when}
            )
        )
    return Manifest(ORIGIN, "rs-bench", (), tuple(notes), tuple(anchors), 0, None, "x").dumps()


def timed(book: AnchorBook, data: bytes) -> tuple[float, int]:
    began = time.perf_counter()
    marks = book.read(data)
    return time.perf_counter() - began, len(marks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--anchored", type=int, default=10_000)
    n = ap.parse_args().anchored
    signer = Signer.generate(ORIGIN)
    full = manifest(signer, range(1, n + 1))
    grown = manifest(signer, range(1, n + 2))
    book = AnchorBook(ORIGIN, [signer.verifier()])
    began = time.perf_counter()
    Manifest.loads(full)
    parse_s = time.perf_counter() - began
    first_s, first = timed(book, full)
    again_s, again = timed(book, full)
    grown_s, new = timed(book, grown)
    print(f"manifest: {n} anchored checkpoints, {2 * n} receipts, {len(full) / 2**20:.1f} MiB")
    print(f"parse only:           {parse_s * 1000:8.1f} ms")
    print(f"first read:           {first_s * 1000:8.1f} ms  ({first} anchors stored)")
    print(f"unchanged read:       {again_s * 1000:8.1f} ms  ({again} anchors stored)")
    print(f"one more checkpoint:  {grown_s * 1000:8.1f} ms  ({new} anchors stored)")


if __name__ == "__main__":
    main()
