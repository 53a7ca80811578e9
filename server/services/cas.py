"""ContentAddressableStorage: FindMissingBlobs, batch reads and writes, GetTree, SplitBlob and
SpliceBlob, translated.

The rules live apart from the protos' shapes: batches in server/blob_batches.py
(their usual answers encoded by hand, server/encoded_responses.py)
(one store call per batch, the size cap, per-blob errors, compressed entries),
GetTree's paging in server/tree_pages.py, splits and splices in server/blob_splits.py. FindMissingBlobs stays here whole: it is one store call
between a vectorised digest parse and an answer that echoes the client's own
Digest messages without running Python code per digest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from itertools import compress
from operator import attrgetter

import grpc
from google.rpc import code_pb2

from cas.compression.codecs import Codecs
from cas.compression.forms import CompressedForms
from cas.digest import Digest, digests_from_protos
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from server import boundary
from server.blob_batches import BlobBatches
from server.blob_splits import BlobSplits
from server.encoded_responses import encode_batch_read_response, encode_batch_update_response
from server.instances import InstanceRegistry
from server.tree_pages import tree_pages

_DATA_OF = attrgetter("data")
_DIGEST_OF = attrgetter("digest")
_COMPRESSOR_OF = attrgetter("compressor")


class ContentAddressableStorageService(re_grpc.ContentAddressableStorageServicer):
    def __init__(
        self,
        instances: InstanceRegistry,
        max_batch_total_size_bytes: int,
        codecs: Codecs | None = None,
        forms: CompressedForms | None = None,
        splits: BlobSplits | None = None,
    ) -> None:
        self.instances = instances
        self.batches = BlobBatches(max_batch_total_size_bytes, codecs, forms)
        self.splits = splits or BlobSplits()

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

    @boundary.unary
    async def BatchUpdateBlobs(
        self, request: re_pb2.BatchUpdateBlobsRequest, context: grpc.aio.ServicerContext
    ) -> re_pb2.BatchUpdateBlobsResponse | bytes:
        cas = self.instances.get(request.instance_name).cas
        entries = request.requests
        datas: list[bytes] = list(map(_DATA_OF, entries))  # each access copies, so take them once
        protos = list(map(_DIGEST_OF, entries))
        digests, errors = await self.batches.update(
            cas, protos, request.digest_function, datas, list(map(_COMPRESSOR_OF, entries))
        )
        if not errors:  # every blob stored: the answer echoes the digests (server/encoded_responses.py)
            return encode_batch_update_response(protos)
        response = re_pb2.BatchUpdateBlobsResponse()
        add = response.responses.add
        for i, digest in enumerate(digests):
            item = add()
            if digest is None:
                item.digest.CopyFrom(entries[i].digest)
            else:
                item.digest.hash = digest.hash
                item.digest.size_bytes = digest.size_bytes
            if errors:
                err = errors.get(i)
                if err is not None:
                    item.status.CopyFrom(err.to_status())
            # An unset status reads as code 0, OK.
        return response

    @boundary.unary
    async def BatchReadBlobs(
        self, request: re_pb2.BatchReadBlobsRequest, context: grpc.aio.ServicerContext
    ) -> re_pb2.BatchReadBlobsResponse | bytes:
        cas = self.instances.get(request.instance_name).cas
        digests, refused, found = await self.batches.read(cas, request.digests, request.digest_function)
        compressors = await self.batches.compress_found(found, request.acceptable_compressors) if found else {}
        if not refused and not compressors and len(found) == len(set(digests)):
            # Every blob found, none compressed: encoded by hand (server/encoded_responses.py).
            datas = [found[digest] for digest in digests if digest is not None]  # none is None: nothing refused
            encoded = encode_batch_read_response(request.digests, datas)
            if encoded is not None:
                return encoded
        response = re_pb2.BatchReadBlobsResponse()
        add = response.responses.add
        for i, digest in enumerate(digests):
            item = add()
            if digest is None or i in refused:  # malformed, or its read failed
                item.digest.CopyFrom(request.digests[i])
                item.status.CopyFrom(refused[i].to_status())
                continue
            item.digest.hash = digest.hash
            item.digest.size_bytes = digest.size_bytes
            data = found.get(digest)
            if data is not None:
                item.data = data
                if compressors:
                    item.compressor = compressors.get(digest, 0)  # type: ignore[assignment]
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
        pages = tree_pages(cas, root, request.page_size, request.page_token, self.batches.max_total_bytes)
        async for directories, next_page_token in pages:
            yield re_pb2.GetTreeResponse(directories=directories, next_page_token=next_page_token)

    @boundary.unary
    async def SplitBlob(self, request: re_pb2.SplitBlobRequest, context: grpc.aio.ServicerContext) -> re_pb2.SplitBlobResponse:
        cas = self.instances.get(request.instance_name).cas
        blob = Digest.from_proto(request.blob_digest, request.digest_function)
        chunks = await self.splits.split(cas, blob)
        # Whatever function the client preferred, the chunks are FastCDC 2020's (REv2 allows it).
        response = re_pb2.SplitBlobResponse(chunking_function=re_pb2.ChunkingFunction.FAST_CDC_2020)
        response.chunk_digests.extend(re_pb2.Digest(hash=d.hash, size_bytes=d.size_bytes) for d in chunks)
        return response

    @boundary.unary
    async def SpliceBlob(
        self, request: re_pb2.SpliceBlobRequest, context: grpc.aio.ServicerContext
    ) -> re_pb2.SpliceBlobResponse:
        cas = self.instances.get(request.instance_name).cas
        blob = Digest.from_proto(request.blob_digest, request.digest_function)
        # The chunks share the blob's digest function (REv2), named or inferred.
        chunks = digests_from_protos(request.chunk_digests, request.digest_function or blob.function)
        await self.splits.splice(cas, blob, chunks)
        return re_pb2.SpliceBlobResponse(blob_digest=request.blob_digest)

