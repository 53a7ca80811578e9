"""Push (Remote Asset API): PushBlob and PushDirectory over server.assets.AssetPusher.

Pushed content must already be in the CAS (FAILED_PRECONDITION with MISSING
violations otherwise). An unset ``digest_function`` is inferred from the hash
length, as the spec asks.
"""

from __future__ import annotations

import grpc

from cas.digest import Digest, digests_from_protos
from remote_apis_protos.build.bazel.remote.asset.v1 import remote_asset_pb2 as asset_pb2
from remote_apis_protos.build.bazel.remote.asset.v1 import remote_asset_pb2_grpc as asset_grpc
from server import boundary
from server.assets.index import BLOB, DIRECTORY
from server.assets.pusher import AssetPusher
from server.assets.qualifiers import parse_qualifiers
from server.instances import InstanceRegistry
from cas.timestamps import seconds_of

AnyPushRequest = asset_pb2.PushBlobRequest | asset_pb2.PushDirectoryRequest


class PushService(asset_grpc.PushServicer):
    def __init__(self, instances: InstanceRegistry, pusher: AssetPusher) -> None:
        self.instances = instances
        self.pusher = pusher

    async def _push(self, request: AnyPushRequest, kind: str, proto_digest: object) -> None:
        instance = self.instances.get(request.instance_name)
        digest = Digest.from_proto(proto_digest, request.digest_function)  # type: ignore[arg-type]
        await self.pusher.push(
            instance.cas,
            request.instance_name,
            kind,
            list(request.uris),
            parse_qualifiers(request.qualifiers, uri_count=len(request.uris)),
            digest,
            expire_at=seconds_of(request.expire_at) if request.HasField("expire_at") else None,
            referenced_blobs=digests_from_protos(request.references_blobs, digest.function),
            referenced_directories=digests_from_protos(request.references_directories, digest.function),
        )

    @boundary.unary
    async def PushBlob(self, request: asset_pb2.PushBlobRequest, context: grpc.aio.ServicerContext) -> asset_pb2.PushBlobResponse:
        await self._push(request, BLOB, request.blob_digest)
        return asset_pb2.PushBlobResponse()

    @boundary.unary
    async def PushDirectory(
        self, request: asset_pb2.PushDirectoryRequest, context: grpc.aio.ServicerContext
    ) -> asset_pb2.PushDirectoryResponse:
        await self._push(request, DIRECTORY, request.root_directory_digest)
        return asset_pb2.PushDirectoryResponse()
