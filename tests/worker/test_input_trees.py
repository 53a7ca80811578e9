"""Input subtrees made once per Directory digest and handed out to be mounted (worker/input_trees.py)."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from cas.digest import Digest
from cas.memory import MemoryStore
from tests.worker.trees import Exe, Link, directory_blobs, put_tree
from worker.directories import DirectoryCache
from worker.file_cache import FileCache
from worker.input_layout import plan_layout
from worker.input_root import InputRootBuilder, Placement
from worker.input_trees import InputTrees, mount_points, open_paths

MOUNTS = Placement(mounts=True)


def many(prefix: str, count: int = 10) -> dict[str, bytes]:
    return {f"f{i}": f"{prefix} {i}".encode() for i in range(count)}


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore(max_bytes=1 << 30)


@pytest.fixture
async def builder(tmp_path: Path) -> InputRootBuilder:
    files = await FileCache.open(tmp_path / "cache", 1 << 30)
    return InputRootBuilder(files, DirectoryCache(), trees=InputTrees.open(tmp_path / "trees"), min_mounted_entries=0)


def layout_of(tree: dict) -> object:  # type: ignore[type-arg]
    blobs: dict[Digest, bytes] = {}
    root = directory_blobs(tree, blobs)
    from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2

    directories = {}
    for digest, data in blobs.items():
        directory = re_pb2.Directory()
        try:
            directory.ParseFromString(data)
        except Exception:  # noqa: BLE001 - file contents are not Directories
            continue
        directories[digest] = directory
    return plan_layout(root, directories)


def test_mount_points_are_the_outermost_big_subtrees_away_from_outputs() -> None:
    layout = layout_of({
        "src": {"a": many("a"), "b": many("b")},
        "out": {"gen": many("gen"), "sub": many("sub")},
        "tiny": {"x": b"1"},
        "top.txt": b"top",
    })
    keep_open = open_paths(["out/sub/result.o"])
    assert keep_open == {"out", "out/sub", "out/sub/result.o"}
    # src whole; out is kept open but its sibling subtree gen is not; tiny is too small.
    assert mount_points(layout, keep_open) == ["src", "out/gen"]  # type: ignore[arg-type]
    assert mount_points(layout, keep_open, max_mounts=1) == ["src"]  # type: ignore[arg-type]
    assert mount_points(layout, open_paths(["src/a"])) == ["out", "src/b"]  # type: ignore[arg-type]


def test_a_layout_without_its_mounted_subtrees_and_a_subtree_alone() -> None:
    layout = layout_of({"src": {"a.c": b"a", "deep": {"b.h": b"b"}, "l": Link("a.c")}, "top": b"t",
                        "out": {"keep": b"k"}})
    rest = layout.without(["src"])  # type: ignore[attr-defined]
    assert rest.directories == ["out", "src"]
    assert sorted(path for _, _, path in rest.files) == ["out/keep", "top"]
    assert rest.symlinks == []
    sub = layout.subtree("src")  # type: ignore[attr-defined]
    assert sub.directories == ["deep"]
    assert sorted(path for _, _, path in sub.files) == ["a.c", "deep/b.h"]
    assert sub.symlinks == [("l", "a.c")]
    assert layout.entries["src"] == 4 and layout.entries[""] == 8  # type: ignore[attr-defined]


async def test_a_subtree_is_made_once_read_only_and_handed_out_again(
    store: MemoryStore, builder: InputRootBuilder, tmp_path: Path
) -> None:
    root = await put_tree(store, {"src": {**many("src"), "tool": Exe(b"#!/bin/sh\n")}, "main.c": b"int main;"})
    assert builder.trees is not None
    async with builder.prepare(root, tmp_path / "one", store, MOUNTS, keep_open=set()) as mounts:
        assert [m.path for m in mounts] == ["src"]
        tree = Path(mounts[0].source)
        assert (tmp_path / "one" / "src").is_dir() and not os.listdir(tmp_path / "one" / "src")  # a mount point
        assert (tmp_path / "one" / "main.c").read_bytes() == b"int main;"
        assert (tree / "f3").read_bytes() == b"src 3"
        assert os.stat(tree / "tool").st_mode & stat.S_IXUSR
        assert stat.S_IMODE(os.stat(tree).st_mode) == 0o555
        assert not os.stat(tree / "f3").st_mode & 0o222
        assert os.stat(tree).st_uid == os.geteuid()
    fetched = builder.files.fetched_blobs
    async with builder.prepare(root, tmp_path / "two", store, MOUNTS, keep_open=set()) as again:
        assert [Path(m.source) for m in again] == [tree]
    assert builder.trees.made == 1 and builder.trees.mounted == 2
    assert builder.files.fetched_blobs == fetched


async def test_without_keep_open_or_mounts_every_file_is_linked(
    store: MemoryStore, builder: InputRootBuilder, tmp_path: Path
) -> None:
    root = await put_tree(store, {"src": many("src")})
    async with builder.prepare(root, tmp_path / "plain", store, Placement(), keep_open=set()) as mounts:
        assert mounts == []
    assert (tmp_path / "plain" / "src" / "f1").read_bytes() == b"src 1"
    assert builder.trees is not None and builder.trees.made == 0


async def test_concurrent_actions_make_a_shared_subtree_once(
    store: MemoryStore, builder: InputRootBuilder, tmp_path: Path
) -> None:
    shared = many("shared", 50)
    roots = [await put_tree(store, {"lib": shared, "own": {"x": f"{i}".encode()}}) for i in range(4)]

    async def one(i: int) -> str:
        async with builder.prepare(roots[i], tmp_path / f"exec{i}", store, MOUNTS, keep_open={"own"}) as mounts:
            await asyncio.sleep(0.01)
            return mounts[0].source

    sources = await asyncio.gather(*(one(i) for i in range(4)))
    assert len(set(sources)) == 1
    assert builder.trees is not None and builder.trees.made == 1


async def test_trees_in_use_are_never_evicted_and_the_rest_go_past_the_cap(
    store: MemoryStore, tmp_path: Path
) -> None:
    files = await FileCache.open(tmp_path / "cache", 1 << 30)
    trees = InputTrees.open(tmp_path / "trees", max_entries=15)
    builder = InputRootBuilder(files, DirectoryCache(), trees=trees, min_mounted_entries=0)
    first = await put_tree(store, {"a": many("a")})
    second = await put_tree(store, {"b": many("b")})
    async with builder.prepare(first, tmp_path / "one", store, MOUNTS, keep_open=set()) as held:
        async with builder.prepare(second, tmp_path / "two", store, MOUNTS, keep_open=set()) as other:
            pass
        await trees.drain()
        # Over the cap (2 x 11 entries), but the first is in use: the second went.
        assert Path(held[0].source).is_dir()
        assert not Path(other[0].source).exists()
        assert len(trees) == 1
    assert trees.clear() == 11
    await trees.drain()
    assert not Path(held[0].source).exists()
