"""ActionCache over real gRPC: hits only when complete, inlining, validation."""

from __future__ import annotations

import os

import grpc

from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from tests.server.client import StorageClient, expect_error, memory_stores
from tests.support.servers import channel_to, config_for, running_server

ACTION = Digest.of(b"an action")


async def update(client: StorageClient, result: re_pb2.ActionResult, action: Digest = ACTION, instance: str = "") -> re_pb2.ActionResult:
    return await client.ac.UpdateActionResult(
        re_pb2.UpdateActionResultRequest(instance_name=instance, action_digest=action.to_proto(), action_result=result)
    )


async def get(client: StorageClient, action: Digest = ACTION, **flags: object) -> re_pb2.ActionResult:
    return await client.ac.GetActionResult(re_pb2.GetActionResultRequest(action_digest=action.to_proto(), **flags))  # type: ignore[arg-type]


async def full_result(client: StorageClient) -> tuple[re_pb2.ActionResult, dict[str, Digest]]:
    """A result with a file, stdout, stderr and an output directory (as a Tree), all uploaded."""
    blobs = {name: await client.upload(name.encode() * 10) for name in ("out", "stdout", "stderr", "inner")}
    tree = re_pb2.Tree(root=re_pb2.Directory(files=[re_pb2.FileNode(name="inner", digest=blobs["inner"].to_proto())]))
    blobs["tree"] = await client.upload(tree.SerializeToString())
    result = re_pb2.ActionResult(
        output_files=[re_pb2.OutputFile(path="bin/out", digest=blobs["out"].to_proto(), is_executable=True)],
        output_directories=[re_pb2.OutputDirectory(path="gen", tree_digest=blobs["tree"].to_proto())],
        stdout_digest=blobs["stdout"].to_proto(),
        stderr_digest=blobs["stderr"].to_proto(),
        exit_code=3,
    )
    return result, blobs


async def test_update_then_get_round_trips(client: StorageClient) -> None:
    result, _ = await full_result(client)
    stored = await update(client, result)
    assert stored == result
    assert await get(client) == result


async def test_a_miss_is_not_found_naming_the_action(client: StorageClient) -> None:
    message = await expect_error(get(client, Digest.of(b"unknown action")), grpc.StatusCode.NOT_FOUND)
    assert Digest.of(b"unknown action").hash in message


async def test_evicted_outputs_make_a_miss_and_hits_refresh_them() -> None:
    """Real LRU eviction in a small CAS: a hit keeps its blobs young; once they go, a miss."""
    config = config_for(stores=memory_stores(cas_size="64KiB"))
    async with running_server(config) as srv, channel_to(srv) as channel:
        client = StorageClient(channel)
        result, _ = await full_result(client)
        await update(client, result)
        # 20 KiB of other blobs at a time; each Get between batches refreshes the result's blobs.
        for batch in range(6):
            for _ in range(5):
                await client.upload(os.urandom(4096))
            assert await get(client) == result, f"evicted despite hits (batch {batch})"
        for _ in range(20):  # 80 KiB with no hit in between: everything old is gone
            await client.upload(os.urandom(4096))
        await expect_error(get(client), grpc.StatusCode.NOT_FOUND)


async def test_inline_stdout_stderr_and_files_on_request(client: StorageClient) -> None:
    result, _ = await full_result(client)
    await update(client, result)
    plain = await get(client)
    assert not plain.stdout_raw and not plain.stderr_raw and not plain.output_files[0].contents
    inlined = await get(client, inline_stdout=True, inline_stderr=True, inline_output_files=["bin/out", "not/there"])
    assert inlined.stdout_raw == b"stdout" * 10
    assert inlined.stderr_raw == b"stderr" * 10
    assert inlined.output_files[0].contents == b"out" * 10
    assert inlined.stdout_digest == result.stdout_digest  # digests stay
    only_stderr = await get(client, inline_stderr=True)
    assert only_stderr.stderr_raw and not only_stderr.stdout_raw


async def test_inline_contents_sent_with_a_result_are_moved_into_the_cas(client: StorageClient) -> None:
    result = re_pb2.ActionResult(
        stdout_raw=b"printed",
        output_files=[re_pb2.OutputFile(path="o", digest=Digest.of(b"file body").to_proto(), contents=b"file body")],
    )
    stored = await update(client, result)
    assert not stored.stdout_raw and not stored.output_files[0].contents
    assert Digest.from_proto(stored.stdout_digest) == Digest.of(b"printed")
    assert await client.read(Digest.of(b"printed")) == b"printed"
    assert await client.read(Digest.of(b"file body")) == b"file body"
    assert (await get(client, inline_stdout=True)).stdout_raw == b"printed"


async def test_inline_content_that_contradicts_its_digest_is_refused(client: StorageClient) -> None:
    result = re_pb2.ActionResult(
        output_files=[re_pb2.OutputFile(path="o", digest=Digest.of(b"one thing").to_proto(), contents=b"another")]
    )
    message = await expect_error(update(client, result), grpc.StatusCode.INVALID_ARGUMENT)
    assert "'o'" in message and "does not match" in message
    await expect_error(get(client), grpc.StatusCode.NOT_FOUND)


BAD_RESULTS = {
    "absolute": (re_pb2.ActionResult(output_files=[re_pb2.OutputFile(path="/etc/passwd", digest=Digest.of(b"x").to_proto())]), "absolute"),
    "dotdot": (re_pb2.ActionResult(output_files=[re_pb2.OutputFile(path="a/../../b", digest=Digest.of(b"x").to_proto())]), "'..'"),
    "empty path": (re_pb2.ActionResult(output_files=[re_pb2.OutputFile(path="", digest=Digest.of(b"x").to_proto())]), "empty"),
    "bad digest": (re_pb2.ActionResult(output_files=[re_pb2.OutputFile(path="a", digest=re_pb2.Digest(hash="zz", size_bytes=1))]), "output_files[0].digest"),
    "no digest": (re_pb2.ActionResult(output_files=[re_pb2.OutputFile(path="a")]), "output_files[0].digest"),
    "duplicate": (
        re_pb2.ActionResult(
            output_files=[re_pb2.OutputFile(path="a", digest=Digest.of(b"x").to_proto())],
            output_directories=[re_pb2.OutputDirectory(path="a", tree_digest=Digest.of(b"t").to_proto())],
        ),
        "already used",
    ),
    "dir without tree": (re_pb2.ActionResult(output_directories=[re_pb2.OutputDirectory(path="d")]), "neither tree_digest"),
    "symlink without target": (re_pb2.ActionResult(output_symlinks=[re_pb2.OutputSymlink(path="l")]), "empty target"),
    "bad stdout digest": (re_pb2.ActionResult(stdout_digest=re_pb2.Digest(hash="q", size_bytes=1)), "stdout_digest"),
}


async def test_invalid_results_are_refused_naming_the_field(client: StorageClient) -> None:
    for label, (result, text) in BAD_RESULTS.items():
        message = await expect_error(update(client, result), grpc.StatusCode.INVALID_ARGUMENT)
        assert text in message, f"{label}: {message}"
    await expect_error(get(client), grpc.StatusCode.NOT_FOUND)


async def test_the_same_symlink_in_both_symlink_lists_is_fine(client: StorageClient) -> None:
    link = re_pb2.OutputSymlink(path="l", target="../t")
    result = re_pb2.ActionResult(output_symlinks=[link], output_file_symlinks=[link])
    assert await update(client, result) == result


async def test_malformed_action_digests_and_functions_are_invalid(client: StorageClient) -> None:
    bad = re_pb2.GetActionResultRequest(action_digest=re_pb2.Digest(hash="abc", size_bytes=3))
    assert "'abc'" in await expect_error(client.ac.GetActionResult(bad), grpc.StatusCode.INVALID_ARGUMENT)
    murmur = re_pb2.GetActionResultRequest(action_digest=ACTION.to_proto(), digest_function=re_pb2.DigestFunction.MURMUR3)
    assert "MURMUR3" in await expect_error(client.ac.GetActionResult(murmur), grpc.StatusCode.INVALID_ARGUMENT)


async def test_results_are_kept_apart_by_digest_function(client: StorageClient) -> None:
    action_b3 = Digest.of(b"an action", re_pb2.DigestFunction.BLAKE3)
    out = await client.upload(b"b3 out", function=re_pb2.DigestFunction.BLAKE3)
    result = re_pb2.ActionResult(output_files=[re_pb2.OutputFile(path="o", digest=out.to_proto())])
    await client.ac.UpdateActionResult(
        re_pb2.UpdateActionResultRequest(action_digest=action_b3.to_proto(), action_result=result, digest_function=re_pb2.DigestFunction.BLAKE3)
    )
    hit = await client.ac.GetActionResult(
        re_pb2.GetActionResultRequest(action_digest=action_b3.to_proto(), digest_function=re_pb2.DigestFunction.BLAKE3)
    )
    assert hit == result
    await expect_error(get(client, Digest(action_b3.hash, action_b3.size_bytes)), grpc.StatusCode.NOT_FOUND)


async def test_an_instance_may_refuse_client_updates(named_client: StorageClient) -> None:
    result = re_pb2.ActionResult(exit_code=0)
    message = await expect_error(update(named_client, result, instance="team/ro"), grpc.StatusCode.PERMISSION_DENIED)
    assert "team/ro" in message
    assert await update(named_client, result, instance="main") == result
    message = await expect_error(update(named_client, result, instance="other"), grpc.StatusCode.INVALID_ARGUMENT)
    assert "'other'" in message



async def test_a_hit_is_answered_with_the_stored_bytes_equal_to_the_message() -> None:
    """The usual hit (nothing inline) is sent as the stored bytes (server/encoded_responses.py):
    byte for byte the result serialized, on the first hit and on the remembered ones."""
    async with running_server(config_for(stores=memory_stores())) as srv, channel_to(srv) as channel:
        client = StorageClient(channel)
        result, _ = await full_result(client)
        await update(client, result)
        raw = channel.unary_unary(
            "/build.bazel.remote.execution.v2.ActionCache/GetActionResult",
            request_serializer=re_pb2.GetActionResultRequest.SerializeToString,
        )
        request = re_pb2.GetActionResultRequest(action_digest=ACTION.to_proto())
        answers = [await raw(request) for _ in range(3)]
        assert answers == [result.SerializeToString(deterministic=True)] * 3
        inlined = await get(client, inline_stdout=True)
        assert inlined.stdout_raw == b"stdout" * 10 and inlined.output_files == result.output_files
