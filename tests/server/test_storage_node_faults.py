"""A frontend over real storage-node processes, with nodes killed and restarted.

The frontend runs in-process (its CAS a ``sharding`` or ``mirrored`` store over
``grpc`` stores); each storage node is a real ``reapi-server`` process with a
storage-only config and its CAS on disk, so ``kill -9`` and a restart on the same
port are what an operator would see. Clients talk to the frontend over gRPC only.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc
import pytest

from cas.digest import Digest
from cas.errors import ReapiError
from cas.remote.store import RemoteStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.app import ReapiServer
from tests.server.client import StorageClient, expect_error
from tests.support.processes import free_port
from tests.support.server_process import ServerProcess
from tests.support.servers import channel_to, config_for, running_server
from tests.support.storage_nodes import storage_node_process
from tests.support.waiting import eventually

RECOVERING = (grpc.aio.AioRpcError, ReapiError, AssertionError)  # while a restarted node is reconnected


class Nodes:
    """Two storage-node processes on fixed ports, killable and restartable."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.listen = {name: f"127.0.0.1:{free_port()}" for name in ("storage-1", "storage-2")}
        self.running: dict[str, tuple[ExitStack, ServerProcess]] = {}

    def start(self, name: str) -> None:
        stack = ExitStack()
        node = stack.enter_context(storage_node_process(self.root / name, self.listen[name]))
        self.running[name] = (stack, node)

    def kill(self, name: str) -> None:
        stack, node = self.running.pop(name)
        node.kill()
        stack.close()

    def wipe(self, name: str) -> None:
        """The node's disk is lost (it comes back empty)."""
        shutil.rmtree(self.root / name / "data")

    def stop_all(self) -> None:
        for stack, _ in self.running.values():
            stack.close()

    def stores(self) -> dict[str, dict[str, Any]]:
        return {name: {"type": "grpc", "address": f"grpc://{listen}"} for name, listen in self.listen.items()}


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[Nodes]:
    nodes = Nodes(tmp_path)
    try:
        await asyncio.gather(*(asyncio.to_thread(nodes.start, name) for name in nodes.listen))
        yield nodes
    finally:
        nodes.stop_all()


async def frontend(nodes: Nodes, top: dict[str, Any]) -> AsyncIterator[tuple[ReapiServer, StorageClient]]:
    stores = {**nodes.stores(), "cas": top, "ac": {"type": "memory", "max_size": "1MiB"}}
    async with running_server(config_for(stores=stores)) as server, channel_to(server) as channel:
        yield server, StorageClient(channel)


@pytest.fixture
async def sharded(nodes: Nodes) -> AsyncIterator[tuple[ReapiServer, StorageClient]]:
    top = {"type": "sharding", "shards": [{"store": "storage-1"}, {"store": "storage-2"}]}
    async for pair in frontend(nodes, top):
        yield pair


@pytest.fixture
async def mirrored(nodes: Nodes) -> AsyncIterator[tuple[ReapiServer, StorageClient]]:
    async for pair in frontend(nodes, {"type": "mirrored", "a": "storage-1", "b": "storage-2"}):
        yield pair


def blobs(count: int, salt: str) -> dict[Digest, bytes]:
    datas = [f"{salt} blob {i} ".encode() * 20 for i in range(count)]
    return {Digest.of(data): data for data in datas}


async def batch_read(client: StorageClient, digests: list[Digest]) -> dict[Digest, Any]:
    request = re_pb2.BatchReadBlobsRequest(digests=[d.to_proto() for d in digests])
    response = await client.cas.BatchReadBlobs(request)
    return {Digest(r.digest.hash, r.digest.size_bytes): r for r in response.responses}


async def test_a_killed_shard_fails_its_blobs_only_until_it_returns(
    nodes: Nodes, sharded: tuple[ReapiServer, StorageClient]
) -> None:
    server, client = sharded
    values = blobs(40, "sharded")
    for digest, data in values.items():
        await client.upload(data)
    cas = server.stores["cas"]
    on_2 = [d for d in values if cas.shard_for(d).name == "storage-2"]  # type: ignore[attr-defined]
    on_1 = [d for d in values if d not in on_2]
    assert on_1 and on_2

    await asyncio.to_thread(nodes.kill, "storage-2")
    assert await client.missing(on_1) == set()
    message = await expect_error(client.missing(on_1 + on_2[:1]), grpc.StatusCode.UNAVAILABLE)
    assert "storage-2" in message
    read = await batch_read(client, on_1 + on_2)
    for digest in on_1:
        assert read[digest].status.code == 0 and read[digest].data == values[digest]
    for digest in on_2:
        assert read[digest].status.code == grpc.StatusCode.UNAVAILABLE.value[0]
        assert "shard 'storage-2' of 'cas'" in read[digest].status.message
    assert await client.read(on_1[0]) == values[on_1[0]]
    message = await expect_error(client.read(on_2[0]), grpc.StatusCode.UNAVAILABLE)
    assert "storage-2" in message

    await asyncio.to_thread(nodes.start, "storage-2")
    assert await eventually(lambda: client.missing(list(values)), *RECOVERING) == set()
    read = await batch_read(client, list(values))
    assert {d: r.data for d, r in read.items()} == values


async def test_a_mirrored_pair_serves_everything_with_one_node_dead_and_repairs_it(
    nodes: Nodes, mirrored: tuple[ReapiServer, StorageClient]
) -> None:
    server, client = mirrored
    before = blobs(30, "before")
    for data in before.values():
        await client.upload(data)
    big = os.urandom(3 << 20)  # streamed through ByteStream, not batched
    await client.write(big)
    big_digest = Digest.of(big)

    await asyncio.to_thread(nodes.kill, "storage-2")
    assert await client.missing([*before, big_digest]) == set()
    read = await batch_read(client, list(before))
    assert {d: r.data for d, r in read.items()} == before
    assert await client.read(big_digest) == big
    during = blobs(30, "during")  # written while storage-2 is down: only storage-1 has them
    for data in during.values():
        await client.upload(data)
    big_during = os.urandom(2 << 20)
    await client.write(big_during)

    nodes.wipe("storage-2")  # and it comes back with an empty disk
    await asyncio.to_thread(nodes.start, "storage-2")
    everything = [*before, *during, big_digest, Digest.of(big_during)]
    # FindMissingBlobs sees storage-2 lacking everything and copies it all back.
    assert await eventually(lambda: repaired(server, everything), *RECOVERING) == set()
    assert await client.missing(everything) == set()
    node_2 = RemoteStore.connect(nodes.stores()["storage-2"]["address"], name="storage-2 directly")
    try:
        assert await node_2.find_missing(everything) == set()
        assert await node_2.get_bytes(big_digest) == big
    finally:
        await node_2.aclose()

    # Now storage-1 dies: storage-2 alone serves all of it.
    await asyncio.to_thread(nodes.kill, "storage-1")
    read = await batch_read(client, [*before, *during])
    assert {d: r.data for d, r in read.items()} == {**before, **during}
    assert await client.read(Digest.of(big_during)) == big_during


async def repaired(server: ReapiServer, digests: list[Digest]) -> set[Digest]:
    """What storage-2 still lacks after the frontend's mirrored find_missing ran."""
    await server.stores["cas"].find_missing(digests)
    node_2 = server.stores["storage-2"]
    missing = await node_2.find_missing(digests)
    assert not missing, f"{len(missing)} not repaired yet"
    return missing
