"""Input roots: unsafe trees refused before anything is touched; safe ones hardlinked from the cache."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cas.errors import InvalidArgument, MissingBlobs
from cas.memory import MemoryStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from cas.digest import Digest
from tests.worker.trees import Exe, Link, directory_blobs, put_tree
from worker.directories import DirectoryCache
from worker.file_cache import FileCache
from worker.input_root import InputRootBuilder, plan_layout, resolve_inside


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore(max_bytes=1 << 30)


@pytest.fixture
async def builder(tmp_path: Path) -> InputRootBuilder:
    files = await FileCache.open(tmp_path / "cache", 1 << 30)
    return InputRootBuilder(files, DirectoryCache())


def raw_tree(*directories: re_pb2.Directory) -> tuple[Digest, dict[Digest, re_pb2.Directory]]:
    """A tree from hand-made Directory protos (the first is the root; no validation on the way)."""
    tree = {Digest.of(d.SerializeToString()): d for d in directories}
    return Digest.of(directories[0].SerializeToString()), tree


async def test_builds_files_dirs_and_symlinks_with_modes(store: MemoryStore, builder: InputRootBuilder, tmp_path: Path) -> None:
    root = await put_tree(store, {
        "src": {"a.c": b"int a;", "deep": {"b.h": b"#pragma once"}},
        "run.sh": Exe(b"#!/bin/sh\necho hi\n"),
        "same.txt": b"int a;",  # same content as src/a.c: one cache file
        "empty": {},
        "link": Link("src/a.c"),
    })
    exec_root = tmp_path / "exec"
    await builder.build(root, exec_root, store)
    assert (exec_root / "src" / "a.c").read_bytes() == b"int a;"
    assert (exec_root / "src" / "deep" / "b.h").read_bytes() == b"#pragma once"
    assert (exec_root / "empty").is_dir()
    assert os.readlink(exec_root / "link") == "src/a.c"
    assert os.stat(exec_root / "run.sh").st_mode & stat.S_IXUSR
    assert not os.stat(exec_root / "src" / "a.c").st_mode & stat.S_IXUSR
    # Hardlinked from the cache: same inode as the other copy of the same content.
    assert os.stat(exec_root / "same.txt").st_ino == os.stat(exec_root / "src" / "a.c").st_ino
    assert os.stat(exec_root / "same.txt").st_nlink >= 3


async def test_executable_and_plain_copies_of_one_blob_never_share_a_mode(store: MemoryStore, builder: InputRootBuilder, tmp_path: Path) -> None:
    root = await put_tree(store, {"tool": Exe(b"#!/bin/sh\n"), "data": b"#!/bin/sh\n"})
    await builder.build(root, tmp_path / "one", store)
    assert os.stat(tmp_path / "one" / "tool").st_mode & 0o111
    assert not os.stat(tmp_path / "one" / "data").st_mode & 0o111
    assert os.stat(tmp_path / "one" / "tool").st_ino != os.stat(tmp_path / "one" / "data").st_ino


async def test_a_warm_build_fetches_nothing(store: MemoryStore, builder: InputRootBuilder, tmp_path: Path) -> None:
    root = await put_tree(store, {f"f{i}": f"content {i}".encode() for i in range(50)})
    await builder.build(root, tmp_path / "cold", store)
    fetched = builder.files.fetched_blobs
    assert fetched == 50
    empty = MemoryStore(max_bytes=1)  # a second build must not need the store at all
    await builder.build(root, tmp_path / "warm", empty)
    assert builder.files.fetched_blobs == fetched
    assert sorted(os.listdir(tmp_path / "warm")) == sorted(f"f{i}" for i in range(50))


async def test_missing_blobs_are_named(store: MemoryStore, builder: InputRootBuilder, tmp_path: Path) -> None:
    blobs: dict[Digest, bytes] = {}
    root = directory_blobs({"a": b"present", "b": b"absent"}, blobs)
    absent = Digest.of(b"absent")
    await store.put_many({d: v for d, v in blobs.items() if d != absent})
    with pytest.raises(MissingBlobs) as caught:
        await builder.build(root, tmp_path / "exec", store)
    assert caught.value.digests == [absent]
    missing_dir_root = directory_blobs({"sub": {"x": b"1"}}, {})
    with pytest.raises(MissingBlobs):
        await builder.build(missing_dir_root, tmp_path / "exec2", store)


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "/abs", "nul\0"])
def test_unsafe_names_are_refused(name: str) -> None:
    directory = re_pb2.Directory()
    directory.files.add(name=name, digest=Digest.of(b"x").to_proto())
    root, tree = raw_tree(directory)
    with pytest.raises(InvalidArgument, match="unsafe name"):
        plan_layout(root, tree)


def test_duplicate_names_are_refused() -> None:
    directory = re_pb2.Directory()
    directory.files.add(name="x", digest=Digest.of(b"x").to_proto())
    directory.symlinks.add(name="x", target="y")
    root, tree = raw_tree(directory)
    with pytest.raises(InvalidArgument, match="twice"):
        plan_layout(root, tree)


@pytest.mark.parametrize("links", [
    {"out": "/etc/passwd"},
    {"out": ".."},
    {"out": "a/../../x"},
    {"dot": ".", "out": "dot/.."},           # each harmless alone, escaping together
    {"loop1": "loop2", "loop2": "loop1"},
    {"sub/up": "../..", },
])
def test_symlinks_that_resolve_outside_are_refused(links: dict[str, str]) -> None:
    resolved = [resolve_inside(path, target, links) for path, target in links.items()]
    assert None in resolved


@pytest.mark.parametrize("path,target,expected", [
    ("a", "b/c", ["b", "c"]),
    ("sub/x", "../y", ["y"]),
    ("sub/x", ".", ["sub"]),
    ("sub/deep/x", "../../z", ["z"]),
])
def test_symlinks_inside_resolve(path: str, target: str, expected: list[str]) -> None:
    assert resolve_inside(path, target, {path: target}) == expected


async def test_an_escaping_tree_touches_nothing(store: MemoryStore, builder: InputRootBuilder, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = await put_tree(store, {"ok": b"fine", "sub": {"esc": Link("../../outside")}})
    exec_root = tmp_path / "exec"
    with pytest.raises(InvalidArgument, match="outside the exec root"):
        await builder.build(root, exec_root, store)
    assert not exec_root.exists()
    assert list(outside.iterdir()) == []
    assert builder.files.fetched_blobs == 0  # refused before any fetch
