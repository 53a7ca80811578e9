"""The worker's CAS client compresses large compressible blobs both ways when the server offers zstd,
and a real worker runs actions that way (cas/remote/store.py, worker/remote_stores.py)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cas.compression.codecs import ZstdCodec
from cas.compression.policy import TransferCompression
from cas.digest import Digest
from cas.memory import MemoryStore
from cas.remote.store import RemoteStore
from server.app import ReapiServer
from tests.support.servers import channel_to, running_server
from tests.worker.actions import ActionClient
from tests.worker.conftest import execution_config, worker_in_process
from worker.config import Compression, WorkerConfig
from worker.remote_stores import RemoteStores, on_this_host, remote_compression

TEXT = b"".join(b"%06d: warning: unused variable 'tmp_%d' [-Wunused-variable]\n" % (i, i % 13) for i in range(90_000))
NOISE = os.urandom(3 << 20)


class Recording:
    """A ByteStream stub that notes the resource names of the calls made through it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.names: list[str] = []

    def Read(self, request: Any) -> Any:  # noqa: N802 - the gRPC method's name
        self.names.append(request.resource_name)
        return self.inner.Read(request)

    def Write(self) -> Any:  # noqa: N802
        call = self.inner.Write()
        names = self.names
        original = call.write

        async def write(request: Any) -> None:
            if request.resource_name:
                names.append(request.resource_name)
            await original(request)

        call.write = write
        return call


def compressing(channel: grpc.aio.Channel, min_size: int = 128 << 10, batches: bool = True) -> tuple[RemoteStore, Recording]:
    store = RemoteStore(channel, "", max_batch_bytes=1 << 20,
                        compression=TransferCompression(ZstdCodec(), min_size, batches=batches))
    recording = Recording(store._bytestream)
    store._bytestream = recording  # type: ignore[assignment]
    return store, recording


async def test_large_compressible_blobs_move_compressed_both_ways(
    cas_server: ReapiServer, cas_channel: grpc.aio.Channel, server_cas: MemoryStore
) -> None:
    store, recording = compressing(cas_channel)
    text, noise = Digest.of(TEXT), Digest.of(NOISE)
    assert await store.put_many({text: TEXT, noise: NOISE}) == {}
    assert await server_cas.get_many([text, noise]) == {text: TEXT, noise: NOISE}
    writes = recording.names
    assert len(writes) == 2
    assert any(f"compressed-blobs/zstd/{text.hash}" in n for n in writes)  # compresses: sent as zstd
    assert any(f"blobs/{noise.hash}" in n and "compressed" not in n for n in writes)  # random: sent as it is
    recording.names.clear()
    misses = cas_server.forms.misses
    assert b"".join([c async for c in store.read(text)]) == TEXT
    assert b"".join([c async for c in store.read(text, offset=1000)]) == TEXT[1000:]
    assert b"".join([c async for c in store.read(text, offset=10, limit=20)]) == TEXT[10:30]  # a limit: plain
    assert cas_server.forms.misses == misses + 2
    assert [n.startswith("compressed-blobs/zstd/") for n in recording.names] == [True, True, False]


async def test_batches_carry_compressed_entries_and_answers(
    cas_server: ReapiServer, cas_channel: grpc.aio.Channel, server_cas: MemoryStore
) -> None:
    store, recording = compressing(cas_channel, min_size=4096)
    small = {Digest.of(TEXT[i : i + 200_000]): TEXT[i : i + 200_000] for i in range(0, 600_000, 200_000)}
    small[Digest.of(b"tiny")] = b"tiny"
    assert await store.put_many(small) == {}
    assert recording.names == []  # all in batches
    assert await server_cas.get_many(small) == small
    assert await store.get_many(list(small)) == small


async def test_small_blobs_and_servers_without_zstd_stay_plain(cas_channel: grpc.aio.Channel) -> None:
    store, recording = compressing(cas_channel, min_size=8 << 20)
    digest = Digest.of(TEXT)
    await store.put_bytes(digest, TEXT)
    assert b"".join([c async for c in store.read(digest)]) == TEXT
    assert all("compressed" not in n for n in recording.names)
    config = execution_config()
    config.compressors = ()
    async with running_server(config) as server, channel_to(server) as channel:
        remote = await RemoteStores(channel, compression=1)("")
        assert remote.compression is None


async def test_offered_zstd_is_used_as_configured(cas_channel: grpc.aio.Channel) -> None:
    store = await RemoteStores(cas_channel, compression=64 << 10)("")
    assert store.compression is not None and store.compression.codec.name == "zstd"
    assert store.compression.min_size == 64 << 10 and store.compression.batches
    assert (await RemoteStores(cas_channel)("")).compression is None


@pytest.mark.parametrize(("server", "mode", "expected"), [
    ("grpc://127.0.0.1:8980", Compression.AUTO, None),
    ("grpc://localhost:8980", Compression.AUTO, None),
    ("grpcs://[::1]:443", Compression.AUTO, None),
    ("grpc://build-server.example:8980", Compression.AUTO, 128 << 10),
    ("grpc://127.0.0.1:8980", Compression.ZSTD, 128 << 10),
    ("grpc://10.1.2.3:8980", Compression.OFF, None),
])
def test_compression_config(server: str, mode: Compression, expected: int | None) -> None:
    assert remote_compression(WorkerConfig(server=server, compression=mode)) == expected


def test_loopback_targets() -> None:
    assert on_this_host("127.0.0.2:1") and on_this_host("[::1]:80") and on_this_host("localhost")
    assert not on_this_host("example.org:80") and not on_this_host("192.168.1.1:80")


@pytest.fixture
async def compressing_worker(exec_server: ReapiServer, tmp_path: Path) -> AsyncIterator[Any]:
    async with worker_in_process(exec_server, tmp_path / "w", compression=Compression.ZSTD,
                                 compression_min_size=64 << 10, inline_blob_limit=0) as worker:
        yield worker


async def test_a_worker_fetches_inputs_and_uploads_outputs_compressed(
    exec_server: ReapiServer, compressing_worker: Any
) -> None:
    async with channel_to(exec_server) as channel:
        client = ActionClient(channel)
        misses = exec_server.forms.misses
        response = await client.run(["sh", "-c", "cat in.txt in.txt > out.txt"], {"in.txt": TEXT},
                                    output_files=["out.txt"])
        assert response.status.code == 0 and response.result.exit_code == 0, response
        assert await client.blob(response.result.output_files[0].digest) == TEXT * 2
        assert exec_server.forms.misses > misses  # the input was read compressed
