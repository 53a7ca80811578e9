"""cas/ac/action_cache.py without gRPC: which missing reference turns a hit into a miss."""

from __future__ import annotations

import pytest

from cas.ac.action_cache import ActionCache
from cas.digest import Digest
from cas.errors import InvalidArgument
from cas.memory import MemoryStore
from cas.store import BlobStore
from cas.decorators.verify import VerifyingStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2

ACTION = Digest.of(b"action")


def blob(data: bytes) -> tuple[Digest, bytes]:
    return Digest.of(data), data


def sample() -> tuple[re_pb2.ActionResult, dict[str, tuple[Digest, bytes]]]:
    """A result using every kind of reference, and the blobs it needs."""
    blobs = {name: blob(name.encode() * 3) for name in ("file", "stdout", "stderr", "tree_file", "dir_file")}
    tree = re_pb2.Tree(
        root=re_pb2.Directory(directories=[re_pb2.DirectoryNode(name="c", digest=Digest.of(b"child").to_proto())]),
        children=[re_pb2.Directory(files=[re_pb2.FileNode(name="t", digest=blobs["tree_file"][0].to_proto())])],
    )
    blobs["tree"] = blob(tree.SerializeToString())
    leaf = re_pb2.Directory(files=[re_pb2.FileNode(name="d", digest=blobs["dir_file"][0].to_proto())])
    blobs["leaf_dir"] = blob(leaf.SerializeToString())
    root = re_pb2.Directory(directories=[re_pb2.DirectoryNode(name="leaf", digest=blobs["leaf_dir"][0].to_proto())])
    blobs["root_dir"] = blob(root.SerializeToString())
    result = re_pb2.ActionResult(
        output_files=[re_pb2.OutputFile(path="f", digest=blobs["file"][0].to_proto())],
        output_directories=[
            re_pb2.OutputDirectory(path="tree", tree_digest=blobs["tree"][0].to_proto()),
            re_pb2.OutputDirectory(path="dir", root_directory_digest=blobs["root_dir"][0].to_proto()),
        ],
        stdout_digest=blobs["stdout"][0].to_proto(),
        stderr_digest=blobs["stderr"][0].to_proto(),
    )
    return result, blobs


async def cache_without(missing: str | None) -> tuple[ActionCache, re_pb2.ActionResult]:
    result, blobs = sample()
    cas: BlobStore = VerifyingStore(MemoryStore(1 << 20))
    await cas.put_many({d: data for name, (d, data) in blobs.items() if name != missing})
    cache = ActionCache(MemoryStore(1 << 20), cas)
    await cache.put(ACTION, result)
    return cache, result


async def test_a_complete_result_is_a_hit() -> None:
    cache, result = await cache_without(None)
    assert await cache.get(ACTION) == result
    assert await cache.get(ACTION) == result  # again, with the tree now remembered


@pytest.mark.parametrize("missing", ["file", "stdout", "stderr", "tree", "tree_file", "root_dir", "leaf_dir", "dir_file"])
async def test_any_missing_reference_is_a_miss(missing: str) -> None:
    cache, _ = await cache_without(missing)
    assert await cache.get(ACTION) is None


async def test_remembered_trees_still_have_their_files_checked() -> None:
    cache, result = await cache_without(None)
    assert await cache.get(ACTION) == result  # parses and remembers the tree
    _, blobs = sample()
    fresh_cas = VerifyingStore(MemoryStore(1 << 20))
    await fresh_cas.put_many({d: data for name, (d, data) in blobs.items() if name != "tree_file"})
    cache.cas = fresh_cas
    assert await cache.get(ACTION) is None


async def test_completeness_checking_can_be_turned_off() -> None:
    result, _ = sample()
    cache = ActionCache(MemoryStore(1 << 20), VerifyingStore(MemoryStore(1 << 20)), check_completeness=False)
    await cache.put(ACTION, result)
    assert await cache.get(ACTION) == result


async def test_an_unreadable_entry_is_a_miss() -> None:
    ac = MemoryStore(1 << 20)
    await ac.put_bytes(ACTION, b"\xff\xff not an ActionResult")
    assert await ActionCache(ac, VerifyingStore(MemoryStore(1 << 20))).get(ACTION) is None


async def test_inlining_stays_within_the_budget_smallest_first() -> None:
    cas = VerifyingStore(MemoryStore(1 << 20))
    small, big = b"s" * 100, b"b" * 5000
    await cas.put_many({Digest.of(small): small, Digest.of(big): big})
    cache = ActionCache(MemoryStore(1 << 20), cas, max_inline_bytes=1000)
    result = re_pb2.ActionResult(stdout_digest=Digest.of(big).to_proto(), stderr_digest=Digest.of(small).to_proto())
    await cache.put(ACTION, result)
    got = await cache.get(ACTION, inline_stdout=True, inline_stderr=True)
    assert got is not None and got.stderr_raw == small and got.stdout_raw == b""


async def test_put_refuses_an_invalid_result_and_stores_nothing() -> None:
    ac = MemoryStore(1 << 20)
    cache = ActionCache(ac, VerifyingStore(MemoryStore(1 << 20)))
    bad = re_pb2.ActionResult(output_files=[re_pb2.OutputFile(path="../x", digest=Digest.of(b"x").to_proto())])
    with pytest.raises(InvalidArgument, match=r"output_files\[0\]\.path"):
        await cache.put(ACTION, bad)
    assert len(ac) == 0


async def test_the_encoded_answer_is_the_parsed_answer_serialized() -> None:
    cache, result = await cache_without(None)
    first = await cache.get_encoded(ACTION)  # parses, checks and remembers
    again = await cache.get_encoded(ACTION)  # from the remembered references
    assert first == again == result.SerializeToString(deterministic=True)
    assert re_pb2.ActionResult.FromString(again) == result
    assert await cache.get(ACTION) == result  # a message again, from the remembered bytes


def tree_sample() -> tuple[re_pb2.ActionResult, dict[str, tuple[Digest, bytes]]]:
    """``sample`` without its root_directory_digest output (those are never remembered)."""
    result, blobs = sample()
    del result.output_directories[1]
    for name in ("root_dir", "leaf_dir", "dir_file"):
        del blobs[name]
    return result, blobs


async def cas_of(blobs: dict[str, tuple[Digest, bytes]], without: str | None = None) -> BlobStore:
    cas: BlobStore = VerifyingStore(MemoryStore(1 << 20))
    await cas.put_many({d: data for name, (d, data) in blobs.items() if name != without})
    return cas


@pytest.mark.parametrize("missing", ["file", "stdout", "stderr", "tree", "tree_file"])
async def test_a_remembered_result_whose_blob_goes_is_a_miss(missing: str) -> None:
    result, blobs = tree_sample()
    cache = ActionCache(MemoryStore(1 << 20), await cas_of(blobs))
    await cache.put(ACTION, result)
    assert await cache.get_encoded(ACTION) == result.SerializeToString(deterministic=True)
    assert len(cache._known) == 1  # remembered: the next hit asks the CAS without parsing
    cache.cas = await cas_of(blobs, without=missing)  # as if the CAS had let it go
    assert await cache.get_encoded(ACTION) is None
    assert await cache.get(ACTION) is None


async def test_results_with_a_root_directory_are_checked_afresh_each_time() -> None:
    result, blobs = sample()
    cache = ActionCache(MemoryStore(1 << 20), await cas_of(blobs))
    await cache.put(ACTION, result)
    assert await cache.get_encoded(ACTION) is not None
    assert len(cache._known) == 0
    cache.cas = await cas_of(blobs, without="leaf_dir")
    assert await cache.get_encoded(ACTION) is None


async def test_a_result_stored_again_is_worked_out_afresh() -> None:
    result, blobs = tree_sample()
    cas = VerifyingStore(MemoryStore(1 << 20))
    await cas.put_many(dict(blobs.values()))
    cache = ActionCache(MemoryStore(1 << 20), cas)
    await cache.put(ACTION, result)
    assert await cache.get_encoded(ACTION) is not None
    gone = Digest.of(b"never stored")
    replaced = re_pb2.ActionResult(stdout_digest=gone.to_proto(), exit_code=1)
    await cache.put(ACTION, replaced)  # another result under the same action
    assert await cache.get_encoded(ACTION) is None  # its stdout is not in the CAS
    await cas.put_bytes(gone, b"never stored")
    assert await cache.get_encoded(ACTION) == replaced.SerializeToString(deterministic=True)


async def test_an_unreadable_entry_is_a_miss_when_encoded_too() -> None:
    ac = MemoryStore(1 << 20)
    await ac.put_bytes(ACTION, b"\xff\xff not an ActionResult")
    cache = ActionCache(ac, VerifyingStore(MemoryStore(1 << 20)), check_completeness=False)
    assert await cache.get_encoded(ACTION) is None
    assert await cache.get_encoded(ACTION) is None


async def test_without_completeness_checking_the_encoded_answer_is_the_stored_result() -> None:
    result, _ = sample()
    cache = ActionCache(MemoryStore(1 << 20), VerifyingStore(MemoryStore(1 << 20)), check_completeness=False)
    await cache.put(ACTION, result)
    assert await cache.get_encoded(ACTION) == await cache.get_encoded(ACTION) == result.SerializeToString(deterministic=True)
    assert await cache.get(ACTION) == result
