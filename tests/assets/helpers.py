"""Small request builders shared by the Remote Asset tests."""

from __future__ import annotations

import base64
import hashlib

from google.protobuf import duration_pb2, timestamp_pb2

from remote_apis_protos.build.bazel.remote.asset.v1 import remote_asset_pb2 as asset_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2


def sri(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}-{base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


def qualifiers(pairs: dict[str, str] | None) -> list[asset_pb2.Qualifier]:
    return [asset_pb2.Qualifier(name=n, value=v) for n, v in (pairs or {}).items()]


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromNanoseconds(int(seconds * 1e9))
    return out


def blob_request(
    *uris: str,
    q: dict[str, str] | None = None,
    timeout: float | None = None,
    oldest: float | None = None,
    function: re_pb2.DigestFunction.Value = re_pb2.DigestFunction.UNKNOWN,
    instance: str = "",
) -> asset_pb2.FetchBlobRequest:
    request = asset_pb2.FetchBlobRequest(instance_name=instance, uris=list(uris), qualifiers=qualifiers(q), digest_function=function)
    if timeout is not None:
        request.timeout.CopyFrom(duration_pb2.Duration(seconds=int(timeout), nanos=int((timeout % 1) * 1e9)))
    if oldest is not None:
        request.oldest_content_accepted.CopyFrom(timestamp(oldest))
    return request


def directory_request(*uris: str, q: dict[str, str] | None = None, timeout: float | None = None, function: re_pb2.DigestFunction.Value = re_pb2.DigestFunction.UNKNOWN) -> asset_pb2.FetchDirectoryRequest:
    request = asset_pb2.FetchDirectoryRequest(uris=list(uris), qualifiers=qualifiers(q), digest_function=function)
    if timeout is not None:
        request.timeout.CopyFrom(duration_pb2.Duration(seconds=int(timeout), nanos=int((timeout % 1) * 1e9)))
    return request
