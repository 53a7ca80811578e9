"""ContentAddressableStorage: FindMissingBlobs, batch reads and writes, GetTree.

The batch RPCs are the hot path for many small blobs, so each does one store call
(``find_missing``, ``get_many``, ``put_many``) for the whole request, and digests are
validated in one pass (``digests_from_protos``). Requests whose blobs add up to more
than ``max_batch_total_size_bytes`` are refused whole, naming the limit; per-blob
problems (a digest that does not match its data, a blob that is absent) get
per-blob statuses, as REv2 asks.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Sequence
from itertools import compress
from operator import attrgetter

import grpc
from google.rpc import code_pb2

from cas.digest import Digest, algorithm_for, digests_from_protos
from cas.errors import InvalidArgument, NotFound, ReapiError, Unimplemented
from cas.tree import TreeWalk
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from server import boundary
from server.instances import InstanceRegistry

# GetTree page size when the client sets none, and the most we put in one page.
DEFAULT_TREE_PAGE_SIZE = 1000
MAX_TREE_PAGE_SIZE = 10_000

_DATA_OF = attrgetter("data")
_DIGEST_OF = attrgetter("digest")
_COMPRESSOR_OF = attrgetter("compressor")
_TOKEN_VERSION = "t1"


def encode_page_token(root: Digest, offset: int) -> str:
    """Opaque to clients: where the next page starts in the walk of ``root``."""
    return base64.urlsafe_b64encode(f"{_TOKEN_VERSION}:{root.hash}:{offset}".encode()).decode()


def decode_page_token(token: str, root: Digest) -> int:
    """The offset a token names; INVALID_ARGUMENT if it is garbled or for another root."""
    try:
        version, root_hash, offset_text = base64.urlsafe_b64decode(token.encode()).decode().split(":")
        offset = int(offset_text)
    except (ValueError, UnicodeError):
        raise InvalidArgument(f"page_token {token!r} is not one this server issued") from None
    if version != _TOKEN_VERSION or offset < 0:
        raise InvalidArgument(f"page_token {token!r} is not one this server issued")
    if root_hash != root.hash:
        raise InvalidArgument(f"page_token {token!r} belongs to the tree of another root, not {root}")
    return offset


class ContentAddressableStorageService(re_grpc.ContentAddressableStorageServicer):
    def __init__(self, instances: InstanceRegistry, max_batch_total_size_bytes: int) -> None:
        self.instances = instances
        self.max_batch_total_size_bytes = max_batch_total_size_bytes

    @boundary.unary
    async def FindMissingBlobs(
        self, request: re_pb2.FindMissingBlobsRequest, context: grpc.aio.ServicerContext
    ) -> re_pb2.FindMissingBlobsResponse:
        cas = self.instances.get(request.instance_name).cas
        protos = request.blob_digests
        digests = digests_from_protos(protos, request.digest_function)
        missing = await cas.find_missing(digests)
        response = re_pb2.FindMissingBlobsResponse()
        if missing:
            # Echo the client's own Digest messages in request order; the positions are
            # picked out without running Python code per digest.
            positions = compress(range(len(digests)), map(missing.__contains__, digests))
            response.missing_blob_digests.extend(map(protos.__getitem__, positions))
        return response

    def _check_batch_size(self, total: int, what: str) -> None:
        if total > self.max_batch_total_size_bytes:
            raise InvalidArgument(
                f"{what} asks for {total} bytes in one batch, over this server's limit of "
                f"{self.max_batch_total_size_bytes} bytes (max_batch_total_size_bytes); use ByteStream for the rest"
            )

    @boundary.unary
    async def BatchUpdateBlobs(
        self, request: re_pb2.BatchUpdateBlobsRequest, context: grpc.aio.ServicerContext
    ) -> re_pb2.BatchUpdateBlobsResponse:
        cas = self.instances.get(request.instance_name).cas
        entries = request.requests
        datas: list[bytes] = list(map(_DATA_OF, entries))  # each access copies, so take them once
        self._check_batch_size(sum(map(len, datas)), "BatchUpdateBlobs")
        digests, refused = _digests_each(list(map(_DIGEST_OF, entries)), request.digest_function)
        if set(map(_COMPRESSOR_OF, entries)) != {re_pb2.Compressor.IDENTITY}:
            for i, entry in enumerate(entries):
                if entry.compressor != re_pb2.Compressor.IDENTITY and i not in refused:
                    refused[i] = InvalidArgument(
                        f"compressor {_compressor_name(entry.compressor)} is not supported for {digests[i]}: "
                        "this server takes uncompressed blobs only (Capabilities lists no batch compressors)"
                    )
        if refused:
            blobs = {d: data for i, (d, data) in enumerate(zip(digests, datas)) if i not in refused and d is not None}
        else:
            blobs = dict(zip(digests, datas))  # type: ignore[arg-type]
        failures = await cas.put_many(blobs) if blobs else {}
        response = re_pb2.BatchUpdateBlobsResponse()
        add = response.responses.add
        for i, digest in enumerate(digests):
            item = add()
            if digest is None:
                item.digest.CopyFrom(entries[i].digest)
            else:
                item.digest.hash = digest.hash
                item.digest.size_bytes = digest.size_bytes
            if refused or failures:
                err = refused.get(i) or (failures.get(digest) if digest is not None else None)
                if err is not None:
                    item.status.CopyFrom(err.to_status())
            # An unset status reads as code 0, OK.
        return response

    @boundary.unary
    async def BatchReadBlobs(
        self, request: re_pb2.BatchReadBlobsRequest, context: grpc.aio.ServicerContext
    ) -> re_pb2.BatchReadBlobsResponse:
        cas = self.instances.get(request.instance_name).cas
        digests, refused = _digests_each(request.digests, request.digest_function)
        wanted: set[Digest] = {d for d in digests if d is not None}
        self._check_batch_size(sum(d.size_bytes for d in wanted), "BatchReadBlobs")
        found = await cas.get_many(wanted) if wanted else {}
        response = re_pb2.BatchReadBlobsResponse()
        add = response.responses.add
        for i, digest in enumerate(digests):
            item = add()
            if digest is None:
                item.digest.CopyFrom(request.digests[i])
                item.status.CopyFrom(refused[i].to_status())
                continue
            item.digest.hash = digest.hash
            item.digest.size_bytes = digest.size_bytes
            data = found.get(digest)
            if data is not None:
                item.data = data
            else:
                item.status.code = code_pb2.NOT_FOUND
                item.status.message = f"blob {digest} is not in the CAS"
        return response

    @boundary.streaming
    async def GetTree(
        self, request: re_pb2.GetTreeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[re_pb2.GetTreeResponse]:
        cas = self.instances.get(request.instance_name).cas
        root = Digest.from_proto(request.root_digest, request.digest_function)
        if request.page_size < 0:
            raise InvalidArgument(f"page_size {request.page_size} is negative")
        page_size = min(request.page_size or DEFAULT_TREE_PAGE_SIZE, MAX_TREE_PAGE_SIZE)
        start = decode_page_token(request.page_token, root) if request.page_token else 0
        if not await cas.has(root):
            raise NotFound(f"root directory {root} is not in the CAS")
        # Pages are also cut by bytes, so a page of big Directory messages stays
        # well under the 4 MiB message limit clients keep.
        byte_budget = min(self.max_batch_total_size_bytes, 2 << 20)
        walk = TreeWalk(cas, root)
        page: list[re_pb2.Directory] = []
        page_bytes = 0
        position = start
        async for _, directory in walk.directories(skip=start):
            size = directory.ByteSize()
            if page and (len(page) >= page_size or page_bytes + size > byte_budget):
                yield re_pb2.GetTreeResponse(directories=page, next_page_token=encode_page_token(root, position))
                page, page_bytes = [], 0
            page.append(directory)
            page_bytes += size
            position += 1
        yield re_pb2.GetTreeResponse(directories=page)

    @boundary.unary
    async def SplitBlob(self, request: re_pb2.SplitBlobRequest, context: grpc.aio.ServicerContext) -> re_pb2.SplitBlobResponse:
        raise Unimplemented("SplitBlob is not supported (Capabilities: split_blob_support is false)")

    @boundary.unary
    async def SpliceBlob(
        self, request: re_pb2.SpliceBlobRequest, context: grpc.aio.ServicerContext
    ) -> re_pb2.SpliceBlobResponse:
        raise Unimplemented("SpliceBlob is not supported (Capabilities: splice_blob_support is false)")


def _digests_each(protos: Sequence[re_pb2.Digest], function: int) -> tuple[list[Digest | None], dict[int, ReapiError]]:
    """Validate batch digests; a malformed one fails only its own entry.

    An unsupported digest function fails the whole request (it applies to all).
    """
    if function:
        algorithm_for(function)
    try:
        return list(digests_from_protos(protos, function)), {}
    except InvalidArgument:
        pass
    digests: list[Digest | None] = []
    refused: dict[int, ReapiError] = {}
    for i, proto in enumerate(protos):
        try:
            digests.append(Digest.from_proto(proto, function))
        except InvalidArgument as err:
            digests.append(None)
            refused[i] = err
    return digests, refused


def _compressor_name(value: int) -> str:
    return re_pb2.Compressor.Value.Name(value) if value in re_pb2.Compressor.Value.values() else str(value)
