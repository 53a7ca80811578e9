"""Archives unpacked into Directory trees in a real (memory, verifying) CAS."""

from __future__ import annotations

import random

import pytest

from cas.digest import Digest
from cas.errors import FailedPrecondition, ResourceExhausted
from cas.memory import MemoryStore
from cas.decorators.verify import VerifyingStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.assets.archive import ArchiveUnpacker
from server.assets.limits import UnpackLimits
from server.assets.spool import Spool
from server.assets.tree_builder import TreeBuilder, UnsafeEntry
from tests.assets.archives import Entry, archive_bytes
from tests.assets.trees import flatten

SHA256 = re_pb2.DigestFunction.SHA256
BLAKE3 = re_pb2.DigestFunction.BLAKE3
BIG = random.Random(5).randbytes(1_300_000)  # over 1 MiB: streamed, not batched

ENTRIES = [
    Entry("pkg/", kind="dir"),
    Entry("pkg/bin/tool", b"#!/bin/sh\necho hi\n", mode=0o755),
    Entry("pkg/README", b"read me\n"),
    Entry("pkg/empty/", kind="dir"),
    Entry("pkg/link", kind="symlink", target="bin/tool"),
]
EXPECTED = {
    "pkg": "dir",
    "pkg/bin": "dir",
    "pkg/bin/tool": ("x", b"#!/bin/sh\necho hi\n"),
    "pkg/README": b"read me\n",
    "pkg/empty": "dir",
    "pkg/link": ("->", "bin/tool"),
}


async def unpack(data: bytes, function: int = SHA256, **limits: int):  # type: ignore[no-untyped-def]
    cas = VerifyingStore(MemoryStore(1 << 30))
    archive = Digest.of(data, function)
    await cas.put_bytes(archive, data)
    tree = await ArchiveUnpacker(Spool(memory_limit=1 << 16), UnpackLimits(**limits)).unpack(cas, archive, function, "test archive")
    return cas, tree


@pytest.mark.parametrize("fmt", ["tar", "tar.gz", "tar.bz2", "tar.xz", "zip"])
async def test_every_format_keeps_files_modes_symlinks_and_empty_dirs(fmt: str) -> None:
    cas, tree = await unpack(archive_bytes(fmt, ENTRIES))
    assert await flatten(cas, tree.root) == EXPECTED
    assert tree.subdirectory("pkg/bin") is not None


@pytest.mark.parametrize("fmt", ["tar", "zip"])  # compression does not change the streaming path
async def test_large_files_are_streamed_whole(fmt: str) -> None:
    cas, tree = await unpack(archive_bytes(fmt, [Entry("big.bin", BIG, mode=0o755), Entry("small", b"s")]))
    assert await flatten(cas, tree.root) == {"big.bin": ("x", BIG), "small": b"s"}


async def test_blake3_trees_use_blake3_throughout() -> None:
    cas, tree = await unpack(archive_bytes("tar.gz", ENTRIES), BLAKE3)
    assert tree.root.function == BLAKE3
    assert await flatten(cas, tree.root) == EXPECTED


async def test_same_archive_gives_the_same_root() -> None:
    data = archive_bytes("tar", ENTRIES)
    _, first = await unpack(data)
    _, second = await unpack(data)
    assert first.root == second.root


async def test_hard_links_share_the_earlier_file() -> None:
    cas, tree = await unpack(archive_bytes("tar", [Entry("a", b"x", mode=0o755), Entry("b", kind="hardlink", target="a")]))
    assert await flatten(cas, tree.root) == {"a": ("x", b"x"), "b": ("x", b"x")}


@pytest.mark.parametrize(
    ("entries", "complaint"),
    [
        ([Entry("../evil", b"x")], "'..' component"),
        ([Entry("ok/../../evil", b"x")], "'..' component"),
        ([Entry("/etc/passwd", b"x")], "absolute path"),
        ([Entry("link", kind="symlink", target="/etc")], "absolute path"),
        ([Entry("a/link", kind="symlink", target="../../outside")], "outside the root"),
        ([Entry("link", kind="symlink", target="."), Entry("link/file", b"x")], "passes through the symlink"),
        ([Entry("x", kind="hardlink", target="nothing")], "not an earlier file"),
    ],
)
@pytest.mark.parametrize("fmt", ["tar", "zip"])
async def test_entries_that_would_escape_the_root_are_refused(entries: list[Entry], complaint: str, fmt: str) -> None:
    if fmt == "zip" and any(e.kind == "hardlink" for e in entries):
        return  # zip has no hard links
    with pytest.raises(UnsafeEntry, match=complaint) as caught:
        await unpack(archive_bytes(fmt, entries))
    assert "test archive" in caught.value.message


async def test_limits_stop_archive_bombs() -> None:
    with pytest.raises(ResourceExhausted, match="limit"):
        await unpack(archive_bytes("tar.gz", [Entry("zeros", bytes(4 << 20))]), max_unpacked_size=1 << 20)
    with pytest.raises(ResourceExhausted, match="more than 2 entries"):
        await unpack(archive_bytes("tar", [Entry(f"f{i}", b"x") for i in range(5)]), max_entries=2)


@pytest.mark.parametrize("data", [b"this is not an archive at all" * 40, archive_bytes("tar.gz", ENTRIES)[:120], b"PK\x03\x04junk"])
async def test_corrupt_or_foreign_data_is_failed_precondition(data: bytes) -> None:
    with pytest.raises(FailedPrecondition, match="not a valid tar"):
        await unpack(data)


def test_tree_builder_rejects_file_directory_clashes() -> None:
    builder = TreeBuilder(SHA256)
    builder.add_directory("a/b")
    with pytest.raises(UnsafeEntry, match="earlier entry made it a directory"):
        builder.add_file("a/b", Digest.of(b""), False)
    builder.add_file("f", Digest.of(b"1"), False)
    with pytest.raises(UnsafeEntry, match="it is a file"):
        builder.add_file("f/g", Digest.of(b""), False)
    builder.add_file("f", Digest.of(b"2"), True)  # a later entry replaces a file, as tar does
    assert builder.file_at("f") == (Digest.of(b"2"), True)
