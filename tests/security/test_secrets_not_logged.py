"""Tokens never appear in the server's log, even at DEBUG: not a valid one, not an
unknown one, not a JWT, whatever the call's outcome."""

from __future__ import annotations

from pathlib import Path

import grpc

from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from remote_apis_protos.google.bytestream import bytestream_pb2 as bs_pb2
from remote_apis_protos.google.bytestream import bytestream_pb2_grpc as bs_grpc
from tests.support.certificates import TestPki
from tests.support.jwks import AUDIENCE, ISSUER, TestIssuer
from tests.support.server_process import reapi_server_process, server_config
from tests.support.tokens import TokenFile, bearer


async def calls_with(channel: grpc.aio.Channel, token: str) -> None:
    """A read, a write, a bad request and a refused one, each carrying ``token``."""
    metadata = bearer(token)
    cas = re_grpc.ContentAddressableStorageStub(channel)
    digest = re_pb2.Digest(hash="0" * 64, size_bytes=1)
    for call in (
        cas.FindMissingBlobs(re_pb2.FindMissingBlobsRequest(instance_name="main", blob_digests=[digest]),
                             metadata=metadata),
        cas.BatchUpdateBlobs(re_pb2.BatchUpdateBlobsRequest(
            instance_name="main", requests=[re_pb2.BatchUpdateBlobsRequest.Request(digest=digest, data=b"x")]),
            metadata=metadata),
        re_grpc.ActionCacheStub(channel).UpdateActionResult(re_pb2.UpdateActionResultRequest(
            instance_name="main", action_digest=digest, action_result=re_pb2.ActionResult()), metadata=metadata),
        bs_grpc.ByteStreamStub(channel).Write(iter([bs_pb2.WriteRequest(resource_name="bad name", data=b"x")]),
                                              metadata=metadata),
    ):
        try:
            await call
        except grpc.aio.AioRpcError:
            pass


async def test_no_token_reaches_the_log_at_debug(tmp_path: Path) -> None:
    pki = TestPki(tmp_path / "pki")
    pair = pki.server_certificate()
    tokens = TokenFile(tmp_path / "tokens.toml")
    valid = tokens.add("ci", ["read", "write"])
    issuer = TestIssuer(tmp_path / "jwks.json")
    jwts = [issuer.token("alice", ["read"]), issuer.token("alice", ["read"], lifetime=-60),
            issuer.token("alice", ["read"], audience="elsewhere")]
    config = server_config(tmp_path / "server", stores={"cas": {"type": "memory"}, "ac": {"type": "memory"}},
                           server={"tls": {"cert": str(pair.cert), "key": str(pair.key)},
                                   "auth": {"tokens": str(tokens.path),
                                            "jwt": {"jwks": str(issuer.jwks_path), "audience": AUDIENCE,
                                                    "issuer": ISSUER}}})
    secrets = [valid, "unknown-token-1234567890", *jwts]
    with reapi_server_process(tmp_path / "server", config, log_level="DEBUG") as server:
        credentials = grpc.ssl_channel_credentials(pki.ca_cert.read_bytes())
        async with grpc.aio.secure_channel(server.address, credentials) as channel:
            for secret in secrets:
                await calls_with(channel, secret)
        log = server.process.log_text()
    assert "UpdateActionResult: identity 'ci' (token) lacks the ac-write permission" in log  # the calls were logged
    assert "unknown token" in log and "expired JWT" in log and "wrong audience" in log
    for secret in secrets:
        assert secret not in log
        for part in secret.split("."):  # nor a JWT's header, payload or signature alone
            assert len(part) < 16 or part not in log
