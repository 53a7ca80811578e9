"""A TCP relay that lets every new connection wait before passing anything on: an endpoint
slow to finish the HTTP/2 handshake (a busy node, a loaded machine, a far network), for
checking that a channel's fast reconnects do not cut short the connection attempt itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

# Longer than the reconnect backoffs (100-250 ms) gRPC also took as the connect timeout,
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
