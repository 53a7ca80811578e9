"""RemoteStore: another REAPI endpoint's CAS, used as a BlobStore.

The worker fetches inputs and uploads outputs through this; the server may use it
as a "grpc" store to front another CAS. Each call picks the cheapest protocol:
FindMissingBlobs for existence, BatchReadBlobs / BatchUpdateBlobs for blobs that fit
in a batch (many per round trip, requests sent in parallel), ByteStream for large
ones (streamed, bounded memory). One channel is kept open for the store's lifetime.

With ``compression`` (cas/compression/policy.py) large blobs move compressed: reads
ask for ``compressed-blobs/{codec}`` and batch reads accept the codec, writes and
batch updates send it when a sample shows the blob compresses. Decoding is bounded
by the digest's size, so a bad answer cannot make the store hold more than the blob.

Content is not verified here (that is VerifyingStore's job, or the caller's): the
store only moves bytes. gRPC failures become ReapiError subclasses, with the
endpoint named in the message.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping
from typing import Any

import grpc

from cas.remote.batch_reads import SIZE_BYTES, all_found, batches, largest_fits, request_digests
from cas.compression.policy import TransferCompression
from cas.compression.streams import compressed, decompressed
from cas.digest import EMPTY_DIGESTS, Digest
from cas.resource_names import download_name, upload_name
from cas.errors import Internal, InvalidArgument, NotFound, ReapiError
from cas.rpc_errors import error_from_rpc, error_from_status, link_error
from cas.security.channels import check_link, open_channel
from cas.store import READ_CHUNK_SIZE, BlobStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from remote_apis_protos.google.bytestream import bytestream_pb2 as bs_pb2
from remote_apis_protos.google.bytestream import bytestream_pb2_grpc as bs_grpc

# What a batch entry costs beyond its data (digest, framing), so batches built to
# ``max_batch_bytes`` stay under the server's limit.
BATCH_ENTRY_OVERHEAD = 256
# FindMissingBlobs requests are split so none nears a 4 MiB message.
FIND_MISSING_CHUNK = 10_000
DEFAULT_MAX_BATCH_BYTES = 4 << 20

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    # An endpoint that went away is retried every 2 s at most, not gRPC's default of
    # up to 2 minutes: a storage node that restarts is used again within seconds.
    # While it is down, calls fail at once with UNAVAILABLE.
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # Not grpc.min_reconnect_backoff_ms: gRPC also takes it as the time a connection
    # attempt may take, and a busy node (or a loaded machine) can take longer than a
    # short one to finish the handshake; the attempt then failed the calls waiting on
    # it with UNAVAILABLE (a TLS handshake at 250 ms, and plain HTTP/2 too,
    # tests/cas/test_remote_slow_connect.py). gRPC's 20 s it is.
]


def _by_function(digests: Iterable[Digest]) -> dict[int, list[Digest]]:
    groups: dict[int, list[Digest]] = {}
    for digest in digests:
        groups.setdefault(digest.function, []).append(digest)
    return groups


def _request_function(function: int) -> Any:
    """The digest_function to send: unset for SHA-256 so v2.0 servers need not know the field."""
    return 0 if function == re_pb2.DigestFunction.SHA256 else function


class RemoteStore(BlobStore):
    """The CAS of the REAPI endpoint behind ``channel`` (shared, not owned)."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        instance_name: str = "",
        *,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        max_parallel_calls: int = 16,
        name: str = "remote",
        upload_ids: Callable[[], str] = lambda: str(uuid.uuid4()),
        compression: TransferCompression | None = None,
    ) -> None:
        self.instance_name = instance_name
        self.max_batch_bytes = max_batch_bytes
        self.name = name
        self.compression = compression
        self._cas = re_grpc.ContentAddressableStorageStub(channel)
        self._bytestream = bs_grpc.ByteStreamStub(channel)
        self._calls = asyncio.Semaphore(max_parallel_calls)
        self._upload_ids = upload_ids
        self._owned_channel: grpc.aio.Channel | None = None
        self.address: str | None = None  # set by connect: the endpoint named in errors

    @classmethod
    def connect(cls, address: str, instance_name: str = "", *, tls_ca: Path | None = None,
                tls_cert: Path | None = None, tls_key: Path | None = None, token_file: Path | None = None,
                **kwargs: Any) -> RemoteStore:
        """A store with its own channel to ``address`` (``grpc://HOST:PORT``, ``grpcs://`` for
        TLS, or ``HOST:PORT``; files as in cas/security/channels.py), closed by ``aclose``.
        No I/O until first use. Its errors name the address (``link_error``)."""
        check_link(address, tls_ca, tls_cert, tls_key)
        channel = open_channel(address, CHANNEL_OPTIONS, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key,
                               token_file=token_file)
        store = cls(channel, instance_name, **kwargs)
        store._owned_channel = channel
        store.address = address
        return store

    async def aclose(self) -> None:
        if self._owned_channel is not None:
            await self._owned_channel.close()
            self._owned_channel = None

    def fits_in_batch(self, digest: Digest) -> bool:
        return digest.size_bytes + BATCH_ENTRY_OVERHEAD <= self.max_batch_bytes

    def _error(self, exc: grpc.aio.AioRpcError, what: str) -> ReapiError:
        context = f"{self.name} {what}"
        return error_from_rpc(exc, context) if self.address is None else link_error(exc, context, self.address)

    # -- existence ---------------------------------------------------------------

    async def find_missing(self, digests: Collection[Digest]) -> set[Digest]:
        wanted = [d for d in set(digests) if not d.is_empty]
        calls = [
            self._find_missing_chunk(function, group[i : i + FIND_MISSING_CHUNK])
            for function, group in _by_function(wanted).items()
            for i in range(0, len(group), FIND_MISSING_CHUNK)
        ]
        missing: set[Digest] = set()
        for part in await asyncio.gather(*calls):
            missing |= part
        return missing

    async def _find_missing_chunk(self, function: int, digests: list[Digest]) -> set[Digest]:
        request = re_pb2.FindMissingBlobsRequest(
            instance_name=self.instance_name,
            blob_digests=[d.to_proto() for d in digests],
            digest_function=_request_function(function),
        )
        async with self._calls:
            try:
                response = await self._cas.FindMissingBlobs(request)
            except grpc.aio.AioRpcError as exc:
                raise self._error(exc, "FindMissingBlobs") from None
        return {Digest(p.hash, p.size_bytes, function) for p in response.missing_blob_digests}

    # -- reads -------------------------------------------------------------------

    async def read(self, digest: Digest, offset: int = 0, limit: int | None = None) -> AsyncIterator[bytes]:
        if digest.is_empty and offset == 0:
            return
        compression = self.compression
        if compression is not None and not limit and compression.wanted(digest.size_bytes - offset):
            codec = compression.codec  # compressed reads take no limit (REv2)
            name = download_name(self.instance_name, digest, codec.name)
            pieces = decompressed(self._read_raw(name, offset, 0, digest), codec.decoder(digest.size_bytes - offset))
            try:
                async for piece in pieces:
                    yield piece
            except InvalidArgument as err:
                raise Internal(f"{self.name} ByteStream.Read of {digest}: {err.message}") from None
            return
        async for chunk in self._read_raw(download_name(self.instance_name, digest), offset, limit or 0, digest):
            yield chunk

    async def _read_raw(self, name: str, offset: int, limit: int, digest: Digest) -> AsyncIterator[bytes]:
        request = bs_pb2.ReadRequest(resource_name=name, read_offset=offset, read_limit=limit)
        try:
            async for response in self._bytestream.Read(request):
                if response.data:
                    yield response.data
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc, f"ByteStream.Read of {digest}") from None

    async def get_many(self, digests: Iterable[Digest]) -> dict[Digest, bytes]:
        """Small blobs in parallel batches, large ones streamed in parallel; absent ones left out."""
        unique = set(digests)
        empty = EMPTY_DIGESTS.intersection(unique)
        out: dict[Digest, bytes] = dict.fromkeys(empty, b"")
        unique -= empty
        if largest_fits(unique, BATCH_ENTRY_OVERHEAD, self.max_batch_bytes):
            small, large = sorted(unique, key=SIZE_BYTES), []  # sorted in C
        else:
            small = sorted((d for d in unique if self.fits_in_batch(d)), key=SIZE_BYTES)
            large = [d for d in unique if not self.fits_in_batch(d)]
        calls: list[Awaitable[dict[Digest, bytes]]] = []
        for function, group in _by_function(small).items():
            calls.extend(self._batch_read(function, batch) for batch in self._batches(group))
        calls.extend(self._read_whole_or_none(d) for d in large)
        for part in await asyncio.gather(*calls):
            out.update(part)
        return out

    def _batches(self, digests: list[Digest]) -> Iterable[list[Digest]]:
        return batches(digests, BATCH_ENTRY_OVERHEAD, self.max_batch_bytes)

    async def _batch_read(self, function: int, digests: list[Digest]) -> dict[Digest, bytes]:
        request = re_pb2.BatchReadBlobsRequest(instance_name=self.instance_name,
                                               digest_function=_request_function(function))
        request_digests(request, digests)
        codec = self.compression.codec if self.compression is not None else None
        if codec is not None and any(self.compression.wanted(d.size_bytes) for d in digests):  # type: ignore[union-attr]
            request.acceptable_compressors.append(codec.value)  # type: ignore[arg-type]
        async with self._calls:
            try:
                response = await self._cas.BatchReadBlobs(request)
            except grpc.aio.AioRpcError as exc:
                raise self._error(exc, f"BatchReadBlobs of {len(digests)} blobs") from None
        responses = response.responses
        found = all_found(responses, function)  # the common answer, read in C-level passes
        if found is not None:
            return found
        out: dict[Digest, bytes] = {}
        for item in responses:
            digest = Digest(item.digest.hash, item.digest.size_bytes, function)
            if item.status.code == grpc.StatusCode.NOT_FOUND.value[0]:
                continue
            if item.status.code != 0:
                raise error_from_status(item.status, f"{self.name} BatchReadBlobs of {digest}")
            out[digest] = item.data
            if item.compressor:
                out[digest] = await self._decompress_answer(digest, item.compressor, item.data)
        return out

    async def _decompress_answer(self, digest: Digest, compressor: int, data: bytes) -> bytes:
        codec = self.compression.codec if self.compression is not None else None
        if codec is None or compressor != codec.value:
            raise Internal(f"{self.name} BatchReadBlobs of {digest}: answered in compressor {compressor}, not asked for")
        try:
            return await asyncio.to_thread(codec.decompress, data, digest.size_bytes)
        except InvalidArgument as err:
            raise Internal(f"{self.name} BatchReadBlobs of {digest}: {err.message}") from None

    async def _read_whole_or_none(self, digest: Digest) -> dict[Digest, bytes]:
        async with self._calls:
            try:
                return {digest: b"".join([chunk async for chunk in self.read(digest)])}
            except NotFound:
                return {}

    async def get_tree(self, root: Digest, page_size: int = 1000) -> tuple[list[re_pb2.Directory], bool]:
        """The first ``page_size`` directories under ``root`` with one GetTree call.

        Returns them and whether that was the whole tree. One round trip instead of one
        per level of depth; callers hash each directory to key it and fall back to
        batch reads for any the server serialised differently, or past the first page.
        """
        request = re_pb2.GetTreeRequest(instance_name=self.instance_name, root_digest=root.to_proto(),
                                        page_size=page_size, digest_function=_request_function(root.function))
        directories: list[re_pb2.Directory] = []
        async with self._calls:
            call = self._cas.GetTree(request)
            try:
                async for page in call:
                    directories.extend(page.directories)
                    if page.next_page_token:
                        call.cancel()
                        return directories, False
            except grpc.aio.AioRpcError as exc:
                raise self._error(exc, f"GetTree of {root}") from None
        return directories, True

    # -- writes ------------------------------------------------------------------

    async def write(self, digest: Digest, chunks: AsyncIterable[bytes]) -> None:
        """Stream with ByteStream.Write; an error in ``chunks`` cancels the call, so nothing commits."""
        codec_name = ""
        compression = self.compression
        if compression is not None and compression.wanted(digest.size_bytes):
            # A look at the first chunk decides; it is then sent like the rest.
            source = aiter(chunks)
            first = await anext(source, b"")
            chunks = _prepend(first, source)
            if compression.pays(first):
                codec_name = compression.codec.name
                chunks = compressed(chunks, compression.codec)
        resource_name = upload_name(self.instance_name, self._upload_ids(), digest, compressor=codec_name)
        call = self._bytestream.Write()
        offset = 0
        try:
            async for chunk in chunks:
                for start in range(0, len(chunk), READ_CHUNK_SIZE):
                    # bytes() of a bytes slice is that slice; a view (a ByteStream upload's) is copied once.
                    piece = bytes(chunk[start : start + READ_CHUNK_SIZE])
                    request = bs_pb2.WriteRequest(write_offset=offset, data=piece)
                    if offset == 0:
                        request.resource_name = resource_name
                    await call.write(request)
                    offset += len(piece)
            await call.write(bs_pb2.WriteRequest(resource_name=resource_name if offset == 0 else "",
                                                 write_offset=offset, finish_write=True))
            await call.done_writing()
            response = await call
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError) as exc:
            # The server may end the call early when the blob already exists; a send
            # racing that end fails here. The blob being there now is success.
            if not await self.find_missing([digest]):
                return
            if isinstance(exc, grpc.aio.AioRpcError):
                raise self._error(exc, f"ByteStream.Write of {digest}") from None
            raise Internal(f"{self.name} ByteStream.Write of {digest} ended early: {exc!r}") from None
        except BaseException:
            call.cancel()
            raise
        expected = offset if codec_name else digest.size_bytes  # a compressed write commits its compressed end
        if response.committed_size not in (expected, -1):
            raise Internal(
                f"{self.name} ByteStream.Write of {digest}: server committed {response.committed_size} bytes"
            )

    async def put_many(self, blobs: Mapping[Digest, bytes]) -> dict[Digest, ReapiError]:
        """Small blobs in parallel BatchUpdateBlobs calls, large ones with ByteStream."""
        wanted = {d: v for d, v in blobs.items() if not d.is_empty}
        small = sorted((d for d in wanted if self.fits_in_batch(d)), key=lambda d: d.size_bytes)
        large = [d for d in wanted if not self.fits_in_batch(d)]
        calls: list[Awaitable[dict[Digest, ReapiError]]] = []
        for function, group in _by_function(small).items():
            calls.extend(self._batch_update(function, {d: wanted[d] for d in batch}) for batch in self._batches(group))
        calls.extend(self._write_one(d, wanted[d]) for d in large)
        failures: dict[Digest, ReapiError] = {}
        for part in await asyncio.gather(*calls):
            failures.update(part)
        return failures

    async def _batch_update(self, function: int, blobs: dict[Digest, bytes]) -> dict[Digest, ReapiError]:
        request = re_pb2.BatchUpdateBlobsRequest(instance_name=self.instance_name,
                                                 digest_function=_request_function(function))
        compression = self.compression if self.compression is not None and self.compression.batches else None
        for digest, data in blobs.items():
            entry = request.requests.add(digest=digest.to_proto(), data=data)
            if compression is not None and compression.wanted(len(data)) and compression.pays(data):
                entry.data = await asyncio.to_thread(compression.codec.compress, data)
                entry.compressor = compression.codec.value  # type: ignore[assignment]
        async with self._calls:
            try:
                response = await self._cas.BatchUpdateBlobs(request)
            except grpc.aio.AioRpcError as exc:
                err = self._error(exc, f"BatchUpdateBlobs of {len(blobs)} blobs")
                return {d: err for d in blobs}
        failures: dict[Digest, ReapiError] = {}
        for item in response.responses:
            if item.status.code != 0:
                digest = Digest(item.digest.hash, item.digest.size_bytes, function)
                failures[digest] = error_from_status(item.status, f"{self.name} BatchUpdateBlobs of {digest}")
        return failures

    async def _write_one(self, digest: Digest, data: bytes) -> dict[Digest, ReapiError]:
        async with self._calls:
            try:
                await self.write(digest, _chunks_of(data))
            except ReapiError as err:
                return {digest: err}
        return {}


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk


async def _chunks_of(data: bytes) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(view), READ_CHUNK_SIZE):
        yield bytes(view[start : start + READ_CHUNK_SIZE])


async def fetch_cache_capabilities(channel: grpc.aio.Channel, instance_name: str) -> re_pb2.CacheCapabilities:
    """The server's CacheCapabilities for ``instance_name``."""
    stub = re_grpc.CapabilitiesStub(channel)
    try:
        capabilities = await stub.GetCapabilities(re_pb2.GetCapabilitiesRequest(instance_name=instance_name))
    except grpc.aio.AioRpcError as exc:
        raise error_from_rpc(exc, "GetCapabilities") from None
    return capabilities.cache_capabilities


def batch_limit(capabilities: re_pb2.CacheCapabilities, default: int = DEFAULT_MAX_BATCH_BYTES) -> int:
    """The advertised batch limit (0 there means no limit of its own: keep ``default``)."""
    limit = capabilities.max_batch_total_size_bytes
    return min(limit, default) if limit > 0 else default


async def fetch_max_batch_bytes(channel: grpc.aio.Channel, instance_name: str, default: int = DEFAULT_MAX_BATCH_BYTES) -> int:
    """The server's advertised batch limit (0 there means no limit of its own: keep ``default``)."""
    return batch_limit(await fetch_cache_capabilities(channel, instance_name), default)
