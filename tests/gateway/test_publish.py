"""gateway publish: the log as C2SP tlog-tiles in a directory and on a real nginx (WebDAV PUT)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import nacl.signing
import pytest

from gateway.cli import main
from gateway.config import load_config
from gateway.keys import DeviceKey, device_id_for, load_device_key
from gateway.log import Event, Log
from gateway.publish import (
    DirTarget,
    HttpTarget,
    PublishError,
    PublishRefused,
    PublishStats,
    publish,
)
from gateway.store import Store
from ledger_client import merkle
from ledger_client.bundle_v2 import Manifest
from ledger_client.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from ledger_client.note import Signer
from ledger_client.tiles import (
    ENTRIES,
    TileBuilder,
    TileRef,
    encode_entry_bundle,
    parse_tile_path,
    tiles_for,
)
from tests.servers.web_server import WebServer

T0 = 1_700_000_000_000_000_000


def fixed_key(seed: int) -> DeviceKey:
    raw = bytes([seed]) * 32
    device = device_id_for(bytes(nacl.signing.SigningKey(raw).verify_key))
    return DeviceKey(device, Signer.from_seed(f"riverseal/{device}", raw))


def clock() -> int:
    return T0


class OpenLog:
    """A Log over a real Store, grown with deterministic event records."""

    def __init__(self, path: Path, key: DeviceKey, tag: str = "") -> None:
        self.store = Store(path)
        self.key = key
        self.tag = tag
        self.log: Log

    async def __aenter__(self) -> OpenLog:
        await self.store.__aenter__()
        self.log = Log(self.store, self.key, clock=clock)
        await self.log.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.store.__aexit__(None, None, None)

    async def grow(self, size: int) -> None:
        while self.log.size < size:
            n = min(size - self.log.size, 2_000)
            at = self.log.size
            await self.log.append(
                [Event("tick", T0 + at + i, {"n": at + i, "tag": self.tag}) for i in range(n)]
            )

    async def publish(self, target: DirTarget | HttpTarget) -> PublishStats:
        return await publish(self.log, target, clock=clock)

    async def expected(self) -> dict[str, bytes]:
        """Every file of the newest checkpoint's tree, computed by TileBuilder from the entries."""
        cp = await self.store.latest_checkpoint()
        assert cp is not None
        entries = [r.data async for r in self.store.entries(0, cp.size - 1)]
        builder = TileBuilder()
        for e in entries:
            builder.append(merkle.leaf_hash(e))
        tiles = [(TileRef(lv, i), t) for lv, i, t in builder.take_full_tiles()]
        tiles += builder.partials()
        assert {ref for ref, _ in tiles} == set(tiles_for(cp.size))
        files = {ref.path: data for ref, data in tiles}
        for ref, _ in tiles:
            if ref.level == 0:
                first = ref.index * 256
                files[TileRef(ENTRIES, ref.index, ref.width).path] = encode_entry_bundle(
                    entries[first : first + ref.width]
                )
        files["checkpoint"] = cp.note.encode()
        return files


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def check_published(files: dict[str, bytes], expected: dict[str, bytes], key: DeviceKey) -> None:
    """``files`` hold the expected tree; anything more is an older size's partial tile."""
    for path, data in expected.items():
        assert files.get(path) == data, path
    manifest = Manifest.loads(files["riverseal-bundle.json"])
    assert manifest.checkpoints[-1].encode() == expected["checkpoint"]
    assert (manifest.origin, manifest.device, manifest.start) == (key.origin, key.device_id, 0)
    for path in set(files) - set(expected) - {"riverseal-bundle.json"}:
        old = parse_tile_path(path)  # an older partial: a prefix of today's tile
        assert not old.full, path
        now = next(
            p
            for p in expected
            if p.startswith("tile/")
            and (parse_tile_path(p).level, parse_tile_path(p).index) == (old.level, old.index)
        )
        assert expected[now].startswith(files[path]), path
    assert not [p for p in files if Path(p).name.startswith(".")], "temp files left behind"


# --- a whole publication ----------------------------------------------------------


async def test_a_directory_and_nginx_get_the_same_files_which_are_the_tiles(
    tmp_path: Path, web_server: WebServer
) -> None:
    key = fixed_key(1)
    async with OpenLog(tmp_path / "log.sqlite", key) as box:
        await box.grow(65_536 + 300)  # one full level-1 tile, a level-2 partial
        async with DirTarget(tmp_path / "mirror") as target:
            to_dir = await box.publish(target)
        async with HttpTarget(web_server.url) as target:
            to_http = await box.publish(target)
        expected = await box.expected()
    assert to_dir == PublishStats(
        str(tmp_path / "mirror"), 65_836, 0, len(expected) + 1, len(expected) + 1, to_dir.bytes
    )
    assert (to_http.files, to_http.bytes) == (to_dir.files, to_dir.bytes)
    on_disk = tree(tmp_path / "mirror")
    assert on_disk == web_server.files()
    assert set(on_disk) == {*expected, "riverseal-bundle.json"}
    check_published(on_disk, expected, key)
    assert {p for p in on_disk if p.startswith("tile/2/")} == {"tile/2/000.p/1"}
    puts = web_server.requests("PUT")
    assert len(puts) == to_http.files and {s for _, _, s in puts} == {201}
    assert puts[-1][1] == "/checkpoint" and puts[-2][1] == "/riverseal-bundle.json"
    # What a reader fetches: the checkpoint is ours and its tiles are there.
    cp = open_checkpoint(httpx.get(f"{web_server.url}/checkpoint").text, [key.signer.verifier()])
    assert cp.size == 65_836
    assert httpx.get(f"{web_server.url}/tile/1/000").content == expected["tile/1/000"]


async def test_publishing_again_uploads_only_what_changed(
    tmp_path: Path, web_server: WebServer
) -> None:
    key = fixed_key(2)
    async with OpenLog(tmp_path / "log.sqlite", key) as box, HttpTarget(web_server.url) as target:
        await box.grow(600)
        first = await box.publish(target)
        before = len(web_server.requests("PUT"))
        await box.grow(1_000)
        second = await box.publish(target)
        new = list(tiles_for(1_000, start=600))
        want = {f"/{r.path}" for r in new}
        want |= {f"/{TileRef(ENTRIES, r.index, r.width).path}" for r in new if r.level == 0}
        want |= {"/riverseal-bundle.json", "/checkpoint"}
        puts = web_server.requests("PUT")[before:]
        assert sorted(p for _, p, _ in puts) == sorted(want)
        assert "/tile/0/000" not in want and "/tile/entries/001" not in want  # done at 600
        assert (second.previous, second.size, second.files) == (600, 1_000, len(want))
        assert first.files == 4 + 3 + 2  # 0/000, 0/001, 0/002.p/88, 1/000.p/2, 3 entry bundles
        # Nothing new: the manifest (mutable: anchors move on) and nothing else.
        third = await box.publish(target)
        assert (third.previous, third.files) == (1_000, 1)
        assert web_server.requests("PUT")[-1][1] == "/riverseal-bundle.json"
        expected = await box.expected()
    files = web_server.files()
    check_published(files, expected, key)
    # The partial tiles of size 600 stay: immutable, still right for size 600.
    assert {"tile/0/002.p/88", "tile/entries/002.p/88", "tile/1/000.p/2"} <= set(files)


# --- interruptions and failing servers ------------------------------------------


class Flaky(httpx.AsyncBaseTransport):
    """A real transport that fails as told: ``fail(n)`` for the n-th PUT (1-based)."""

    def __init__(self, fail: dict[int, httpx.Response | Exception], after: int | None = None):
        self.inner = httpx.AsyncHTTPTransport()
        self.fail = fail
        self.after = after
        self.puts = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            self.puts += 1
            if self.after is not None and self.puts > self.after:
                raise httpx.ConnectError("the uplink is gone", request=request)
            outcome = self.fail.get(self.puts)
            if isinstance(outcome, Exception):
                raise outcome
            if outcome is not None:
                return outcome
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class DyingDir(DirTarget):
    """A directory whose disk fills up after ``room`` files."""

    def __init__(self, root: Path, room: int) -> None:
        super().__init__(root)
        self.room = room

    async def put(self, path: str, data: bytes, content_type: str) -> None:
        if self.room == 0:
            raise PublishError(f"writing {self.root / path} failed: No space left on device")
        self.room -= 1
        await super().put(path, data, content_type)


@pytest.mark.parametrize("where", ["dir", "nginx"])
async def test_an_interrupted_publish_leaves_the_old_checkpoint_and_resumes(
    tmp_path: Path, web_server: WebServer, where: str
) -> None:
    key = fixed_key(3)
    mirror = tmp_path / "mirror"

    def target(fail_after: int | None = None) -> DirTarget | HttpTarget:
        if where == "dir":
            return DirTarget(mirror) if fail_after is None else DyingDir(mirror, fail_after)
        transport = None if fail_after is None else Flaky({}, after=fail_after)
        return HttpTarget(web_server.url, transport=transport, attempts=2, backoff_base_s=0.01)

    def published() -> dict[str, bytes]:
        return tree(mirror) if where == "dir" else web_server.files()

    async with OpenLog(tmp_path / "log.sqlite", key) as box:
        await box.grow(600)
        async with target() as t:
            await box.publish(t)
        at_600 = published()
        await box.grow(3_000)
        async with target(fail_after=7) as t:
            with pytest.raises(PublishError) as failed:
                await box.publish(t)
        if where == "nginx":
            assert web_server.url in str(failed.value)
            assert "ConnectError" in str(failed.value)
        half = published()
        assert half["checkpoint"] == at_600["checkpoint"]  # readers still see a whole 600
        assert len(half) == len(at_600) + 7
        async with target() as t:
            resumed = await box.publish(t)
        assert (resumed.previous, resumed.size) == (600, 3_000)
        expected = await box.expected()
    check_published(published(), expected, key)


async def test_a_server_that_is_down_or_says_no_gets_a_clear_error(
    tmp_path: Path, web_server: WebServer
) -> None:
    key = fixed_key(4)
    async with OpenLog(tmp_path / "log.sqlite", key) as box:
        await box.grow(300)
        web_server.stop()
        async with HttpTarget(web_server.url, attempts=3, backoff_base_s=0.01) as t:
            with pytest.raises(PublishError, match="failed 3 times, last: ConnectError") as down:
                await box.publish(t)
        assert f"GET {web_server.url}/checkpoint" in str(down.value)
        web_server.start()
        async with HttpTarget(f"{web_server.url}/readonly/log", attempts=3) as t:
            with pytest.raises(PublishError, match=r"PUT http://.*/readonly/log/.*: HTTP 405"):
                await box.publish(t)
        paths = [p for _, p, _ in web_server.requests("PUT")]
        assert len(paths) == len(set(paths)), "a refusal is not retried"
        # 503s and dropped connections are retried; the publication completes.
        flaky = Flaky(
            {
                1: httpx.Response(503),
                2: httpx.Response(502),
                3: httpx.ReadError("connection reset"),
                4: httpx.Response(503),
            }
        )
        async with HttpTarget(web_server.url, transport=flaky, backoff_base_s=0.01) as t:
            stats = await box.publish(t)
        assert stats.files == stats.planned == flaky.puts - 4
        expected = await box.expected()
    files = web_server.files()
    check_published(
        {p: d for p, d in files.items() if not p.startswith("readonly/")}, expected, key
    )


# --- targets that are not ours --------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


@pytest.mark.parametrize("case", ["another device", "a fork", "a longer log", "not a note"])
async def test_a_target_that_this_log_does_not_extend_is_refused_and_left_alone(
    tmp_path: Path, case: str
) -> None:
    key = fixed_key(5)
    mirror = tmp_path / "mirror"
    other_key = fixed_key(6) if case == "another device" else key
    async with OpenLog(tmp_path / "other.sqlite", other_key, tag="other") as other:
        await other.grow(800 if case == "a longer log" else 500)
        async with DirTarget(mirror) as t:
            await other.publish(t)
    if case == "not a note":
        (mirror / "checkpoint").write_text("<html>hello</html>\n")
    before = snapshot(mirror)
    tag = "other" if case == "a longer log" else "ours"
    async with OpenLog(tmp_path / "ours.sqlite", key, tag=tag) as box:
        await box.grow(300 if case == "a longer log" else 700)
        async with DirTarget(mirror) as t:
            with pytest.raises(PublishRefused) as refused:
                await box.publish(t)
        ours = await box.store.latest_checkpoint()
    assert ours is not None
    text = str(refused.value)
    assert f"size {ours.size}" in text
    if case == "another device":
        assert "not this log's" in text and other_key.origin in text and key.origin in text
    elif case == "a fork":
        async with Store(tmp_path / "ours.sqlite") as store:
            stored_at_500 = await store.checkpoints(500, 500)
        theirs = open_checkpoint((mirror / "checkpoint").read_text(), [key.signer.verifier()])
        assert "forked" in text and "size 500" in text and theirs.root.hex() in text
        assert stored_at_500 == []  # our root at 500 was folded from stored hashes
    elif case == "a longer log":
        assert "size 800" in text and "larger than ours" in text
    else:
        assert "not a checkpoint note" in text
    assert snapshot(mirror) == before


async def test_a_target_with_an_older_checkpoint_of_ours_resumes_from_it(
    tmp_path: Path, web_server: WebServer
) -> None:
    key = fixed_key(7)
    async with OpenLog(tmp_path / "log.sqlite", key) as box, HttpTarget(web_server.url) as t:
        await box.grow(600)
        await box.publish(t)
        # The mirror's checkpoint is an older one of ours, of a size the store never
        # checkpointed (another box's copy of this log, say): its root is recomputed.
        entries = [r.data async for r in box.store.entries(0, 299)]
        note = sign_checkpoint(
            Checkpoint(key.origin, 300, merkle.MerkleTree(entries).root()), key.signer
        )
        httpx.put(f"{web_server.url}/checkpoint", content=note.encode())
        assert await box.store.checkpoints(300, 300) == []
        await box.grow(900)
        stats = await box.publish(t)
        new = list(tiles_for(900, start=300))
        assert (stats.previous, stats.size) == (300, 900)
        assert stats.files == len(new) + sum(r.level == 0 for r in new) + 2
        expected = await box.expected()
    check_published(web_server.files(), expected, key)


# --- the command line -------------------------------------------------------------


async def test_cli_publish_to_a_directory_and_a_url(
    tmp_path: Path, web_server: WebServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", str(tmp_path / "box")]) == 0
    config = tmp_path / "box" / "gateway.toml"
    cfg = load_config(config)
    key = load_device_key(cfg.key_file)
    async with OpenLog(cfg.db_path, key) as box:
        await box.grow(700)
    capsys.readouterr()
    mirror = tmp_path / "mirror"
    args = ["publish", "--config", str(config), "--to"]
    # The CLI runs its own event loop: run it in a thread, away from the test's loop.
    assert await asyncio.to_thread(main, [*args, str(mirror)]) == 0
    out = capsys.readouterr()
    assert out.out == (
        f"published checkpoint 700 to {mirror} (it had none): 9 files, "
        f"{sum(len(d) for d in tree(mirror).values()):,} bytes\n"
    )
    assert "9/9 files" in out.err
    url = f"{web_server.url}/logs/{key.device_id}"
    header = ["--header", "Authorization: Bearer not-checked-by-this-nginx"]
    assert await asyncio.to_thread(main, [*args, url, *header]) == 0
    assert "published checkpoint 700 to http://" in capsys.readouterr().out
    served = {p.removeprefix(f"logs/{key.device_id}/"): d for p, d in web_server.files().items()}
    mirrored = tree(mirror)
    del served["riverseal-bundle.json"], mirrored["riverseal-bundle.json"]  # "exported" differs
    assert served == mirrored
    assert await asyncio.to_thread(main, [*args, url, "--header", "no colon"]) == 1
    assert "'no colon' is not 'Name: value'" in capsys.readouterr().err
    # Another device's mirror is refused, with the diagnosis and its hint.
    other = fixed_key(8)
    async with OpenLog(tmp_path / "other.sqlite", other) as foreign:
        await foreign.grow(10)
        async with DirTarget(tmp_path / "foreign") as t:
            await foreign.publish(t)
    assert await asyncio.to_thread(main, [*args, str(tmp_path / "foreign")]) == 1
    err = capsys.readouterr().err
    assert "not this log's" in err and "hint: the target was left as it is" in err
    assert os.listdir(tmp_path / "foreign")  # untouched, not emptied
