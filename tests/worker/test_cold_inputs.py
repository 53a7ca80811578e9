"""A cold input tree: each fetched file written once, where the action wants it, and taken
into the worker's cache as a file the action cannot change (worker/input_placer.py)."""

from __future__ import annotations

import asyncio
import errno
import os
import re
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cas.digest import Digest
from cas.memory import MemoryStore
from server.app import ReapiServer
from tests.support.metrics_scrape import scrape
from tests.support.servers import channel_to
from tests.support.tmpfs_disk import tmpfs_disk
from tests.worker.actions import ActionClient
from tests.worker.sandboxing import reachable_dir, sandboxed_worker
from tests.worker.test_file_cache import CountingStore
from tests.worker.trees import Exe, Node, put_tree
from worker.directories import DirectoryCache
from worker.disk import in_memory
from worker.file_cache import FileCache
from worker.input_root import InputRootBuilder, Placement
from worker.input_trees import InputTrees

ACTION_USER = (65534, 65534)  # links: the action runs as another user (the sandbox's choice)
LINKS = Placement(owner=ACTION_USER)
COPIES = Placement(copy=True)
MOUNTS = Placement(owner=ACTION_USER, mounts=True)


def files(prefix: str, count: int = 20) -> dict[str, bytes]:
    return {f"f{i:02d}": f"{prefix} {i}\n".encode() for i in range(count)}


@pytest.fixture
def store() -> CountingStore:
    return CountingStore(MemoryStore(max_bytes=1 << 30))


@pytest.fixture(params=[False, True], ids=["disk", "memory"])
async def builder(request: pytest.FixtureRequest, tmp_path: Path) -> InputRootBuilder:
    """Trees to mount as on a disk (fetched files into the cache first, then linked) and
    as on a memory filesystem (written into the tree, adopted by the cache later)."""
    cache = await FileCache.open(tmp_path / "cache", 1 << 30)
    trees = InputTrees.open(tmp_path / "work" / ".trees")
    trees.in_memory = request.param
    return InputRootBuilder(cache, DirectoryCache(), trees=trees, min_mounted_entries=0)


def cache_file(builder: InputRootBuilder, data: bytes, executable: bool = False) -> Path:
    return Path(builder.files.path_of(Digest.of(data), executable))


async def build(builder: InputRootBuilder, store: CountingStore, tree: dict, exec_root: Path,  # type: ignore[type-arg]
                placement: Placement) -> None:
    root = await put_tree(store.inner, tree)
    async with builder.prepare(root, exec_root, store, placement, keep_open={"out"}) as mounts:
        assert bool(mounts) == placement.mounts
        for mount in mounts:  # what the sandbox would mount there, for the checks below
            os.rmdir(exec_root / mount.path)
            os.symlink(mount.source, exec_root / mount.path)


async def test_a_cold_file_is_written_once_and_is_the_caches_read_only_file(
    store: CountingStore, builder: InputRootBuilder, tmp_path: Path
) -> None:
    inputs = files("src")
    await build(builder, store, {"src": inputs, "out": {}}, tmp_path / "exec", LINKS)
    assert builder.files.fetched_blobs == len(inputs)
    for name, data in inputs.items():
        placed = (tmp_path / "exec" / "src" / name).stat()
        cached = cache_file(builder, data).stat()
        assert (placed.st_dev, placed.st_ino) == (cached.st_dev, cached.st_ino)  # one write, two names
        assert placed.st_uid == os.geteuid() and stat.S_IMODE(placed.st_mode) == 0o444
    assert (tmp_path / "exec" / "src").stat().st_uid == ACTION_USER[0]


async def test_a_cold_actions_inputs_serve_the_next_action_from_the_cache(
    store: CountingStore, builder: InputRootBuilder, tmp_path: Path
) -> None:
    inputs = files("shared")
    await build(builder, store, {"lib": inputs, "out": {}}, tmp_path / "one", MOUNTS)
    calls = len(store.get_many_calls)
    # Taken into the cache off the input path; the next action waits for that, it never fetches again.
    await build(builder, store, {"elsewhere": inputs, "run.sh": Exe(b"#!/bin/sh\n"), "out": {}}, tmp_path / "two",
                LINKS)
    requested = {d for call in store.get_many_calls[calls:] for d in call}
    assert Digest.of(b"#!/bin/sh\n") in requested
    assert not requested & {Digest.of(data) for data in inputs.values()}
    await builder.files.drain()
    for name, data in inputs.items():
        assert (tmp_path / "two" / "elsewhere" / name).read_bytes() == data
        assert cache_file(builder, data).read_bytes() == data
    assert builder.files.fetched_blobs == len(inputs) + 1


def test_memory_filesystems_are_told_from_disks(tmp_path: Path) -> None:
    for path in (tmp_path, Path("/dev/shm"), Path("/")):
        if path.is_dir():
            kind = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True).stdout
            assert in_memory(path) == (kind.strip() in ("tmpfs", "ramfs")), (path, kind)


async def test_files_written_into_a_mounted_tree_are_adopted_as_they_are(
    store: CountingStore, builder: InputRootBuilder, tmp_path: Path
) -> None:
    inputs = files("tree")
    await build(builder, store, {"lib": inputs, "out": {}}, tmp_path / "exec", MOUNTS)
    await builder.files.drain()
    assert builder.trees is not None and builder.trees.made == 1
    for name, data in inputs.items():
        in_tree = (tmp_path / "exec" / "lib" / name).stat()  # the mount point shows the tree
        cached = cache_file(builder, data).stat()
        assert (in_tree.st_dev, in_tree.st_ino) == (cached.st_dev, cached.st_ino)
        assert in_tree.st_uid == os.geteuid() and stat.S_IMODE(in_tree.st_mode) == 0o444
    assert len(builder.files) == len(inputs)


async def test_where_inputs_are_copies_changing_one_leaves_the_cache_alone(
    store: CountingStore, builder: InputRootBuilder, tmp_path: Path
) -> None:
    inputs = files("copy", 3)
    await build(builder, store, {"src": inputs, "out": {}}, tmp_path / "exec", COPIES)
    mine = tmp_path / "exec" / "src" / "f00"
    assert mine.stat().st_ino != cache_file(builder, inputs["f00"]).stat().st_ino
    os.chmod(mine, 0o644)  # the action runs as the worker's user here: it owns its copy
    mine.write_bytes(b"poisoned")
    assert cache_file(builder, inputs["f00"]).read_bytes() == inputs["f00"]
    await build(builder, store, {"again": inputs, "out": {}}, tmp_path / "next", COPIES)
    assert (tmp_path / "next" / "again" / "f00").read_bytes() == inputs["f00"]


async def test_one_blob_wanted_in_both_modes_is_fetched_once_and_written_in_each(
    store: CountingStore, builder: InputRootBuilder, tmp_path: Path
) -> None:
    data = b"#!/bin/sh\necho both\n"
    await build(builder, store, {"plain": data, "tool": Exe(data), "dir": {"again": Exe(data)}, "out": {}},
                tmp_path / "exec", LINKS)
    assert builder.files.fetched_blobs == 1
    modes = {name: stat.S_IMODE((tmp_path / "exec" / name).stat().st_mode) for name in ("plain", "tool", "dir/again")}
    assert modes == {"plain": 0o444, "tool": 0o555, "dir/again": 0o555}
    assert (tmp_path / "exec" / "tool").stat().st_ino == (tmp_path / "exec" / "dir" / "again").stat().st_ino
    assert (tmp_path / "exec" / "tool").stat().st_ino != (tmp_path / "exec" / "plain").stat().st_ino


async def test_corrupt_content_is_written_nowhere(store: CountingStore, builder: InputRootBuilder, tmp_path: Path) -> None:
    store.corrupt = True
    with pytest.raises(Exception, match="corrupt content"):
        await build(builder, store, {"src": files("bad", 3), "out": {}}, tmp_path / "exec", MOUNTS)
    await builder.files.drain()
    assert len(builder.files) == 0
    assert not list((tmp_path / "cache").rglob("*-*"))
    assert not [p for p in (tmp_path / "exec").rglob("f*")]


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs for the worker's cache and exec roots."""
    with tmpfs_disk(tmp_path / "disk", "1m") as disk:
        yield disk


@pytest.mark.parametrize("placement", [LINKS, MOUNTS, COPIES], ids=["links", "mounts", "copies"])
async def test_a_full_disk_names_the_path_and_leaves_no_partial_file(
    placement: Placement, store: CountingStore, tiny_disk: Path
) -> None:
    cache = await FileCache.open(tiny_disk / "cache", 1 << 30)
    trees = InputTrees.open(tiny_disk / "work" / ".trees")
    assert trees.in_memory  # a tmpfs: fetched files go straight into the trees
    builder = InputRootBuilder(cache, DirectoryCache(), trees=trees, min_mounted_entries=0)
    big = {f"b{i}": os.urandom(300 << 10) for i in range(5)}  # 1.5 MiB: cannot fit
    with pytest.raises(OSError) as raised:
        await build(builder, store, {"big": big, "out": {}}, tiny_disk / "work" / "exec", placement)
    assert raised.value.errno == errno.ENOSPC
    assert str(tiny_disk) in str(raised.value.filename)
    await cache.drain()
    if builder.trees is not None:
        await builder.trees.drain()
    for path in tiny_disk.rglob("*"):  # whatever is left is whole: never a file cut short
        if path.is_file() and not path.is_symlink():
            assert path.stat().st_size == 300 << 10, path
    for key in list(cache.newest(len(cache))):
        assert Path(cache.path_of(*key)).stat().st_size == key[0].size_bytes


async def test_concurrent_cold_actions_share_one_fetch(store: CountingStore, builder: InputRootBuilder,
                                                       tmp_path: Path) -> None:
    inputs = files("both", 50)
    store.gate = asyncio.Event()
    first = asyncio.create_task(build(builder, store, {"a": inputs, "out": {}}, tmp_path / "one", MOUNTS))
    second = asyncio.create_task(build(builder, store, {"b": inputs, "out": {}}, tmp_path / "two", LINKS))
    await asyncio.sleep(0.05)
    store.gate.set()
    await asyncio.gather(first, second)
    assert builder.files.fetched_blobs == len(inputs)
    assert (tmp_path / "two" / "b" / "f49").read_bytes() == inputs["f49"]


# -- with real worker processes in their sandboxes ---------------------------------------------

TAMPER = """
for attempt in 'echo x > lib/f00' 'chmod 666 lib/f00' 'rm -f lib/f01 && echo mine > lib/f01' \\
               'mv lib/f02 lib/f03' 'ln -f lib/f04 lib/f05'; do
  sh -c "$attempt" 2>/dev/null
done
cat lib/f00
"""


METRICS_URL = re.compile(r"metrics: (http://\S+)")


@pytest.fixture
def reachable() -> Iterator[Path]:
    with reachable_dir() as path:
        yield path


@pytest.mark.parametrize("config", ["", "input_mount_min_entries = 0\n"], ids=["links", "mounts"])
async def test_a_cold_action_cannot_change_the_cached_inputs_the_next_action_reads(
    config: str, exec_server: ReapiServer, tmp_path: Path, reachable: Path
) -> None:
    inputs = files("input", 8)
    async with (sandboxed_worker("bwrap", tmp_path, reachable, exec_server.address,
                                 config + 'http_listen = "127.0.0.1:0"\n', concurrency=1) as worker,
                channel_to(exec_server) as channel):
        metrics = worker.process.wait_for_log(METRICS_URL, 60).group(1)
        client = ActionClient(channel)
        first = await client.run(["sh", "-c", TAMPER], {"lib": inputs}, salt=b"cold")
        assert first.status.code == 0, first.status
        assert await client.blob(first.result.stdout_digest) == inputs["f00"]
        fetched = (await asyncio.to_thread(scrape, metrics)).value("reapi_worker_input_bytes_fetched_total")
        assert fetched >= sum(map(len, inputs.values()))
        # Another tree (another subtree to mount) with the same files and one more: those
        # from the cache, each as it was sent; only the new one fetched.
        later = await client.run(["sh", "-c", "cat other/f*"], {"other": {**inputs, "new": b"!"}}, salt=b"warm")
        assert await client.blob(later.result.stdout_digest) == b"".join(inputs[name] for name in sorted(inputs))
        after = (await asyncio.to_thread(scrape, metrics)).value("reapi_worker_input_bytes_fetched_total")
        assert after == fetched + 1
        for data in inputs.values():
            found = [p for p in worker.cache_dir.rglob(f"{Digest.of(data).hash}-*")]
            assert found and all(p.read_bytes() == data and not p.stat().st_mode & 0o222 for p in found)
        assert not worker.problems(), worker.problems()
