"""Fetch (Remote Asset API): FetchBlob and FetchDirectory over server.assets.AssetFetcher.

The service only translates. Errors in the request (bad or unsupported qualifiers,
no URIs) are RPC errors; failures at the origin (404, checksum mismatch, timeout)
are answered inline in the response's ``status`` with the URI that failed, as the
spec asks, so clients such as BuildStream can tell a miss from a broken server.
"""

from __future__ import annotations

import grpc

from cas.digest import algorithm_for
from cas.timestamps import seconds_of, timestamp_of
from remote_apis_protos.build.bazel.remote.asset.v1 import remote_asset_pb2 as asset_pb2
from remote_apis_protos.build.bazel.remote.asset.v1 import remote_asset_pb2_grpc as asset_grpc
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server import boundary
from server.assets.fetcher import AssetFetcher, FetchOutcome, FetchRequest
from server.assets.qualifiers import parse_qualifiers
from server.auth.caller import refusal_unless
from server.auth.permissions import Permission
from server.instances import InstanceRegistry

AnyFetchRequest = asset_pb2.FetchBlobRequest | asset_pb2.FetchDirectoryRequest


def fetch_request(request: AnyFetchRequest, method: str = "Fetch") -> FetchRequest:
    """Validate the common fields of both fetch requests. A caller without ``execute``
    is answered from the cache only (docs/SECURITY.md)."""
    function = request.digest_function or re_pb2.DigestFunction.SHA256
    algorithm_for(function)  # INVALID_ARGUMENT if we cannot compute it
    return FetchRequest(
        instance=request.instance_name,
        uris=tuple(request.uris),
        qualifiers=parse_qualifiers(request.qualifiers, uri_count=len(request.uris)),
        function=function,
        timeout=seconds_of(request.timeout) if request.HasField("timeout") else None,
        oldest_accepted=seconds_of(request.oldest_content_accepted) if request.HasField("oldest_content_accepted") else None,
        download_refusal=refusal_unless(Permission.EXECUTE, request.instance_name, method,
                                        "the asset is not in the cache, and fetching it downloads it"),
    )


def _common(outcome: FetchOutcome, request: FetchRequest) -> dict[str, object]:
    fields: dict[str, object] = {"uri": outcome.uri, "qualifiers": outcome.qualifiers(request)}
    if outcome.error is not None:
        fields["status"] = outcome.error.to_status()
    else:
        fields["digest_function"] = request.function
    if outcome.expires_at is not None:
        fields["expires_at"] = timestamp_of(outcome.expires_at)
    return fields


class FetchService(asset_grpc.FetchServicer):
    def __init__(self, instances: InstanceRegistry, fetcher: AssetFetcher) -> None:
        self.instances = instances
        self.fetcher = fetcher

    @boundary.unary
    async def FetchBlob(self, request: asset_pb2.FetchBlobRequest, context: grpc.aio.ServicerContext) -> asset_pb2.FetchBlobResponse:
        instance = self.instances.get(request.instance_name)
        fetch = fetch_request(request, "FetchBlob")
        outcome = await self.fetcher.fetch_blob(instance.cas, fetch)
        response = asset_pb2.FetchBlobResponse(**_common(outcome, fetch))  # type: ignore[arg-type]
        if outcome.digest is not None:
            response.blob_digest.CopyFrom(outcome.digest.to_proto())
        return response

    @boundary.unary
    async def FetchDirectory(
        self, request: asset_pb2.FetchDirectoryRequest, context: grpc.aio.ServicerContext
    ) -> asset_pb2.FetchDirectoryResponse:
        instance = self.instances.get(request.instance_name)
        fetch = fetch_request(request, "FetchDirectory")
        outcome = await self.fetcher.fetch_directory(instance.cas, fetch)
        response = asset_pb2.FetchDirectoryResponse(**_common(outcome, fetch))  # type: ignore[arg-type]
        if outcome.digest is not None:
            response.root_directory_digest.CopyFrom(outcome.digest.to_proto())
        return response
