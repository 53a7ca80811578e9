"""The server's CAS as seen by the worker: one RemoteStore per instance name, made on first use.

Leases name the instance their action came from, so the worker may need several.
All share the worker's one channel. The batch size limit is asked of the server
(GetCapabilities) once per instance; if that fails the REAPI default is used, and
the next lease asks again.
"""

from __future__ import annotations

import logging

import grpc

from cas.errors import ReapiError
from cas.remote import DEFAULT_MAX_BATCH_BYTES, RemoteStore, fetch_max_batch_bytes

log = logging.getLogger("reapi.worker")


class RemoteStores:
    def __init__(self, channel: grpc.aio.Channel, max_parallel_calls: int = 16) -> None:
        self.channel = channel
        self.max_parallel_calls = max_parallel_calls
        self._stores: dict[str, RemoteStore] = {}

    async def __call__(self, instance_name: str) -> RemoteStore:
        store = self._stores.get(instance_name)
        if store is not None:
            return store
        try:
            limit = await fetch_max_batch_bytes(self.channel, instance_name)
        except ReapiError as err:
            log.warning("GetCapabilities for instance %r failed (%s); using %d-byte batches",
                        instance_name, err, DEFAULT_MAX_BATCH_BYTES)
            return RemoteStore(self.channel, instance_name, max_parallel_calls=self.max_parallel_calls,
                               name=f"CAS {instance_name!r}")
        store = RemoteStore(self.channel, instance_name, max_batch_bytes=limit,
                            max_parallel_calls=self.max_parallel_calls, name=f"CAS {instance_name!r}")
        self._stores[instance_name] = store
        return store
