"""A storage node slow to finish a new connection (busy, or on a loaded machine) is
waited for, not failed: the ``grpc`` store's fast reconnects must not cut short the
connection attempt itself (cas/remote/store.py CHANNEL_OPTIONS)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from cas.digest import Digest
from cas.remote.store import RemoteStore
from tests.support.storage_nodes import running_storage_nodes

# Longer than the 250 ms reconnect backoff gRPC also took as the connect timeout,
# shorter than a connection attempt's own 20 s.
SLOW_HANDSHAKE_S = 1.0


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@asynccontextmanager
async def slow_to_answer(target: str) -> AsyncIterator[str]:
    """A TCP relay to ``target`` (HOST:PORT) that lets each connection wait
    ``SLOW_HANDSHAKE_S`` before passing anything on: the HTTP/2 handshake completes late."""
    host, port = target.rsplit(":", 1)
    relays: set[asyncio.Task[None]] = set()

    async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(SLOW_HANDSHAKE_S)
        node_reader, node_writer = await asyncio.open_connection(host, int(port))
        await asyncio.gather(_pipe(client_reader, node_writer), _pipe(node_reader, client_writer))

    def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(relay(reader, writer))
        relays.add(task)
        task.add_done_callback(relays.discard)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        for task in list(relays):
            task.cancel()
        await asyncio.gather(*relays, return_exceptions=True)


async def test_a_node_slow_to_finish_the_connection_is_waited_for() -> None:
    async with running_storage_nodes(1) as [address], slow_to_answer(address.removeprefix("grpc://")) as relay:
        store = RemoteStore.connect(f"grpc://{relay}")
        try:
            data = b"stored through a slow connection"
            await store.put_bytes(Digest.of(data), data)
            assert await store.get_bytes(Digest.of(data)) == data
        finally:
            await store.aclose()
