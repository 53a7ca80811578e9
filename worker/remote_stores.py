"""The server's CAS as seen by the worker: one RemoteStore per instance name, made on first use.

Leases name the instance their action came from, so the worker may need several.
All share the worker's one channel. The batch size limit and the compressors are
asked of the server (GetCapabilities) once per instance; if that fails the REAPI
default is used, without compression, and the next lease asks again.

Compression (``[worker] compression``): zstd for blobs of ``compression_min_size``
and more that compress, when the server offers zstd; "auto" leaves it off when the
server is on this host, where it would only cost CPU on both ends.
"""

from __future__ import annotations

import ipaddress
import logging

import grpc

from cas.compression.codecs import ZSTD, ZstdCodec
from cas.compression.policy import TransferCompression
from cas.errors import ReapiError
from cas.remote.store import DEFAULT_MAX_BATCH_BYTES, RemoteStore, batch_limit, fetch_cache_capabilities
from worker.config import Compression, WorkerConfig, target_of

log = logging.getLogger("reapi.worker")


class RemoteStores:
    def __init__(self, channel: grpc.aio.Channel, max_parallel_calls: int = 16, compression: int | None = None) -> None:
        """``compression``: the smallest blob to move compressed, or None for never."""
        self.channel = channel
        self.max_parallel_calls = max_parallel_calls
        self.compression = compression
        self._stores: dict[str, RemoteStore] = {}

    async def __call__(self, instance_name: str) -> RemoteStore:
        store = self._stores.get(instance_name)
        if store is not None:
            return store
        try:
            capabilities = await fetch_cache_capabilities(self.channel, instance_name)
        except ReapiError as err:
            log.warning("GetCapabilities for instance %r failed (%s); using %d-byte batches",
                        instance_name, err, DEFAULT_MAX_BATCH_BYTES)
            return RemoteStore(self.channel, instance_name, max_parallel_calls=self.max_parallel_calls,
                               name=f"CAS {instance_name!r}")
        transfer = None
        if self.compression is not None and ZSTD in capabilities.supported_compressors:
            transfer = TransferCompression(
                ZstdCodec(), self.compression, batches=ZSTD in capabilities.supported_batch_update_compressors
            )
        store = RemoteStore(self.channel, instance_name, max_batch_bytes=batch_limit(capabilities),
                            max_parallel_calls=self.max_parallel_calls, name=f"CAS {instance_name!r}",
                            compression=transfer)
        self._stores[instance_name] = store
        return store


def remote_compression(config: WorkerConfig) -> int | None:
    """The smallest blob the worker moves compressed, or None: ``[worker] compression``."""
    if config.compression is Compression.OFF:
        return None
    if config.compression is Compression.AUTO and on_this_host(target_of(config.server)[0]):
        return None
    return config.compression_min_size


def on_this_host(target: str) -> bool:
    """Whether a gRPC target (HOST:PORT) is a loopback address."""
    host = target.rsplit(":", 1)[0].strip("[]") if ":" in target else target
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
