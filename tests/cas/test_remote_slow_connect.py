"""A storage node slow to finish a new connection (busy, or on a loaded machine) is
waited for, not failed: the ``grpc`` store's fast reconnects must not cut short the
connection attempt itself (cas/remote/store.py CHANNEL_OPTIONS)."""

from __future__ import annotations

from cas.digest import Digest
from cas.remote.store import RemoteStore
from tests.support.slow_relay import slow_to_answer
from tests.support.storage_nodes import running_storage_nodes


async def test_a_node_slow_to_finish_the_connection_is_waited_for() -> None:
    async with running_storage_nodes(1) as [address], slow_to_answer(address.removeprefix("grpc://")) as relay:
        store = RemoteStore.connect(f"grpc://{relay}")
        try:
            data = b"stored through a slow connection"
            await store.put_bytes(Digest.of(data), data)
            assert await store.get_bytes(Digest.of(data)) == data
        finally:
            await store.aclose()
