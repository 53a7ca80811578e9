"""ByteStream reads from the zero-config (disk) CAS, whose chunks the disk store reads
straight behind their ReadResponse headers (``read_framed``): what the client gets,
what the metrics count, and a disk's read error midway."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import grpc
import pytest

from cas.digest import Digest
from remote_apis_protos.google.bytestream import bytestream_pb2 as bs_pb2
from server.resource_names import download_name, upload_name
from tests.server.client import StorageClient, stream, write_requests
from tests.support.metrics_scrape import scrape
from tests.support.read_faults import fail_second_preadv
from tests.support.servers import channel_to, config_for, running_server

MiB = 1 << 20


async def upload(client: StorageClient, data: bytes) -> Digest:
    digest = Digest.of(data)
    name = upload_name("", str(uuid.uuid4()), digest)
    assert (await client.bytestream.Write(stream(write_requests(name, data, chunk=MiB)))).committed_size == len(data)
    return digest


async def test_reads_at_any_offset_and_limit_and_their_counted_bytes(tmp_path: Path) -> None:
    config = config_for(tmp_path=tmp_path, http_listen="127.0.0.1:0")
    async with running_server(config) as server, channel_to(server) as channel:
        assert server.http is not None
        client = StorageClient(channel)
        data = os.urandom(5 * MiB + 12_345)
        digest = await upload(client, data)
        responses = [r async for r in client.bytestream.Read(bs_pb2.ReadRequest(resource_name=download_name("", digest)))]
        assert b"".join(r.data for r in responses) == data
        assert max(len(r.data) for r in responses) <= MiB
        for offset, limit in ((1, 0), (MiB - 1, 2), (3 * MiB + 5, MiB + 10), (len(data) - 1, 0), (len(data), 0)):
            expected = data[offset : offset + limit] if limit else data[offset:]
            assert await client.read(digest, offset=offset, limit=limit) == expected, (offset, limit)
        metrics = await asyncio.to_thread(scrape, f"{server.http.url}/metrics")
        read_bytes = len(data) + sum(min(limit or len(data), len(data) - offset) for offset, limit in (
            (1, 0), (MiB - 1, 2), (3 * MiB + 5, MiB + 10), (len(data) - 1, 0), (len(data), 0)))
        assert metrics.value("reapi_cas_bytes_total", direction="read") == read_bytes
        assert metrics.value("reapi_cas_blobs_total", direction="read") == 6


async def test_a_read_error_midway_is_internal_and_the_server_serves_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_server(config_for(tmp_path=tmp_path)) as server, channel_to(server) as channel:
        client = StorageClient(channel)
        data = os.urandom(6 * MiB)
        digest = await upload(client, data)
        fail_second_preadv(monkeypatch)
        received = []
        call = client.bytestream.Read(bs_pb2.ReadRequest(resource_name=download_name("", digest)))
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            async for response in call:
                received.append(response.data)
        assert failure.value.code() == grpc.StatusCode.INTERNAL
        assert "cannot read" in (failure.value.details() or "")
        assert "Input/output error" in (failure.value.details() or "")
        assert data.startswith(b"".join(received)) and len(b"".join(received)) < len(data)
        monkeypatch.undo()
        assert await client.read(digest) == data
