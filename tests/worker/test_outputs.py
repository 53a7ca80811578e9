"""Declared outputs and their collection: paths checked, types reported as REv2 says."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cas.digest import Digest
from cas.errors import FailedPrecondition, InvalidArgument
from cas.memory import MemoryStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from worker.output_paths import create_output_parents, declared_outputs
from worker.outputs import IN_MEMORY_LIMIT, OutputCollector, inline_outputs, upload_missing


def command(**fields: object) -> re_pb2.Command:
    return re_pb2.Command(arguments=["true"], **fields)  # type: ignore[arg-type]


def collect(root: Path, cmd: re_pb2.Command):  # type: ignore[no-untyped-def]
    return OutputCollector(root, re_pb2.DigestFunction.SHA256, cmd.output_directory_format).collect(declared_outputs(cmd))


@pytest.mark.parametrize("path", ["../x", "a/../../x", "/etc/passwd", "..", "a/"])
def test_outputs_outside_the_exec_root_are_refused(path: str) -> None:
    with pytest.raises(InvalidArgument, match="output path"):
        declared_outputs(command(output_paths=[path]))


def test_working_directory_outside_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="working_directory"):
        declared_outputs(command(working_directory="../up", output_paths=["x"]))


def test_paths_are_reported_relative_to_the_working_directory() -> None:
    [out] = declared_outputs(command(working_directory="pkg", output_files=["../gen/x.h"]))
    assert out.path == "../gen/x.h" and out.exec_path == "gen/x.h" and out.kind == "file"


def test_parents_are_created_but_not_through_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    os.symlink("../outside", root / "escape")
    outputs = declared_outputs(command(output_files=["a/b/c.o"], output_directories=["d/tree"]))
    create_output_parents(root, outputs, "")
    assert (root / "a" / "b").is_dir() and (root / "d").is_dir()
    assert not (root / "d" / "tree").exists()  # the action makes output directories itself
    with pytest.raises(InvalidArgument, match="symlink"):
        create_output_parents(root, declared_outputs(command(output_paths=["escape/sub/x"])), "")
    assert list(outside.iterdir()) == []


def test_files_directories_and_symlinks_are_collected(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "tool").write_bytes(b"#!/bin/sh\n")
    os.chmod(tmp_path / "bin" / "tool", 0o755)
    tree = tmp_path / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "a.txt").write_bytes(b"a")
    (tree / "sub" / "b.txt").write_bytes(b"b")
    (tree / "sub" / "deeper" / "b.txt").write_bytes(b"b")
    os.symlink("a.txt", tree / "link")
    os.symlink("bin/tool", tmp_path / "tool-link")
    cmd = command(output_files=["bin/tool", "tool-link", "never-made"], output_directories=["tree"])
    out = collect(tmp_path, cmd)
    result = out.result
    assert [(f.path, f.is_executable) for f in result.output_files] == [("bin/tool", True)]
    assert [(s.path, s.target) for s in result.output_file_symlinks] == [("tool-link", "bin/tool")]
    assert [(s.path, s.target) for s in result.output_symlinks] == [("tool-link", "bin/tool")]
    [directory] = result.output_directories
    tree_proto = re_pb2.Tree()
    tree_proto.ParseFromString(out.blobs[Digest.from_proto(directory.tree_digest)])
    assert [f.name for f in tree_proto.root.files] == ["a.txt"]
    assert [(s.name, s.target) for s in tree_proto.root.symlinks] == [("link", "a.txt")]
    assert [d.name for d in tree_proto.root.directories] == ["sub"]
    assert directory.is_topologically_sorted
    # Every child is listed once, and each parent comes before its children.
    by_digest = {Digest.of(c.SerializeToString(deterministic=True)): c for c in tree_proto.children}
    assert len(by_digest) == len(tree_proto.children) == 2
    position = {d: i for i, d in enumerate(by_digest)}
    for parent in tree_proto.children:
        for node in parent.directories:
            assert position[Digest.from_proto(node.digest)] > position[Digest.of(parent.SerializeToString(deterministic=True))]
    assert not directory.HasField("root_directory_digest")
    assert out.blobs[Digest.of(b"a")] == b"a"


def test_root_directory_digest_when_asked(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"f")
    cmd = command(output_paths=["d"], output_directory_format=re_pb2.Command.OutputDirectoryFormat.TREE_AND_DIRECTORY)
    out = collect(tmp_path, cmd)
    [directory] = out.result.output_directories
    root = re_pb2.Directory()
    root.ParseFromString(out.blobs[Digest.from_proto(directory.root_directory_digest)])
    assert [f.name for f in root.files] == ["f"] and directory.HasField("tree_digest")


def test_wrong_types_are_failed_precondition(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(FailedPrecondition, match="is a directory"):
        collect(tmp_path, command(output_files=["dir"]))
    with pytest.raises(FailedPrecondition, match="is a regular file"):
        collect(tmp_path, command(output_directories=["file"]))


def test_a_path_in_both_output_lists_is_whichever_the_action_made(tmp_path: Path) -> None:
    """Buck2's compatibility mode lists an output of either type in both output_files and
    output_directories; it is reported once, as what it turned out to be."""
    (tmp_path / "made_dir").mkdir()
    (tmp_path / "made_dir" / "f").write_bytes(b"x")
    (tmp_path / "made_file").write_bytes(b"y")
    both = ["made_dir", "made_file", "not_made"]
    cmd = command(output_files=both + ["only_file"], output_directories=both + ["only_dir"])
    assert [(o.path, o.kind) for o in declared_outputs(cmd)] == [
        ("made_dir", "any"), ("made_file", "any"), ("not_made", "any"), ("only_file", "file"), ("only_dir", "directory"),
    ]
    result = collect(tmp_path, cmd).result
    assert [f.path for f in result.output_files] == ["made_file"]
    assert [d.path for d in result.output_directories] == ["made_dir"]


def test_an_output_whose_parent_became_an_escaping_symlink_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"do not upload")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "out")
    with pytest.raises(InvalidArgument, match="outside the exec root"):
        collect(root, command(output_paths=["out/secret"]))


async def test_upload_sends_only_what_is_missing_and_streams_large_files(tmp_path: Path) -> None:
    big = os.urandom(IN_MEMORY_LIMIT + 10)
    (tmp_path / "big").write_bytes(big)
    (tmp_path / "small").write_bytes(b"small")
    (tmp_path / "known").write_bytes(b"known")
    out = collect(tmp_path, command(output_paths=["big", "small", "known"]))
    assert isinstance(out.blobs[Digest.of(big)], Path)
    store = MemoryStore(max_bytes=1 << 30)
    await store.put_bytes(Digest.of(b"known"), b"known")
    sent = await upload_missing(store, out.blobs)
    assert sent == 2
    assert await store.get_bytes(Digest.of(big)) == big
    assert await upload_missing(store, out.blobs) == 0


def test_inline_outputs_fill_the_result_smallest_first_within_the_limit(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "small").write_bytes(b"s" * 10)
    (tmp_path / "out" / "same").write_bytes(b"s" * 10)  # same content: sent once
    (tmp_path / "out" / "mid").write_bytes(b"m" * 100)
    (tmp_path / "out" / "big").write_bytes(b"b" * (IN_MEMORY_LIMIT + 1))  # streamed from disk: never inline
    (tmp_path / "out" / "empty").write_bytes(b"")
    collected = collect(tmp_path, command(output_paths=["out/small", "out/same", "out/mid", "out/big", "out/empty"]))
    stdout = b"o" * 50
    digest = collected.add_blob(stdout, re_pb2.DigestFunction.SHA256)
    collected.result.stdout_digest.CopyFrom(digest.to_proto())
    rest = inline_outputs(collected.result, collected.blobs, 70, re_pb2.DigestFunction.SHA256)
    contents = {f.path: f.contents for f in collected.result.output_files}
    assert contents == {"out/small": b"s" * 10, "out/same": b"", "out/mid": b"", "out/big": b"", "out/empty": b""}
    assert collected.result.stdout_raw == stdout  # 10 + 50 fit in 70; the 100-byte file does not
    # Left to upload_missing (the empty blob always exists; it is never sent).
    assert set(rest) == {Digest.of(b"m" * 100), Digest.of(b"b" * (IN_MEMORY_LIMIT + 1)), Digest.of(b"")}


def test_no_limit_means_nothing_inline(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"data")
    collected = collect(tmp_path, command(output_paths=["f"]))
    assert inline_outputs(collected.result, collected.blobs, 0, re_pb2.DigestFunction.SHA256) == collected.blobs
    assert not collected.result.output_files[0].contents
