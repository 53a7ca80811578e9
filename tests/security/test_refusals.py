"""Issue 9, acceptance 3: every refusal has its status and a message naming the cause.

Credentials that are missing or wrong are UNAUTHENTICATED (no token, unknown token,
a header that is not Bearer, expired / not yet valid / mis-signed / wrong-audience /
wrong-issuer JWTs, a JWT naming an unknown key); a known identity without the
permission is PERMISSION_DENIED naming the identity, the permission, the instance and
the method. Transport-level refusals (no or an untrusted client certificate, plain
text to the TLS port) are in test_transport.py.
"""

from __future__ import annotations

import time

import grpc
import pytest

from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from tests.security.conftest import EVERYTHING, FarmFactory
from tests.support.jwks import TestIssuer
from tests.support.tokens import TokenFile, bearer

DIGEST = re_pb2.Digest(hash="ab" * 32, size_bytes=3)


async def refusal(channel: grpc.aio.Channel, instance: str = "main",
                  metadata: tuple[tuple[str, str], ...] | None = None) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await re_grpc.ActionCacheStub(channel).GetActionResult(
            re_pb2.GetActionResultRequest(instance_name=instance, action_digest=DIGEST), metadata=metadata)
    return caught.value


async def test_missing_and_unknown_tokens_are_unauthenticated(farm_factory: FarmFactory, token_file: TokenFile) -> None:
    token_file.add("ci", EVERYTHING)
    async with farm_factory() as farm, farm.channel() as channel:
        none = await refusal(channel)
        assert none.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "GetActionResult: no credentials" in none.details()
        assert "authorization: Bearer <token>" in none.details() and "--remote_header" in none.details()

        wrong = await refusal(channel, metadata=bearer("not-a-token-anyone-has"))
        assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "unknown token" in wrong.details()
        assert "not-a-token-anyone-has" not in wrong.details()

        basic = await refusal(channel, metadata=(("authorization", "Basic dXNlcjpwYXNz"),))
        assert basic.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "not 'Bearer <token>'" in basic.details()


async def test_a_known_identity_without_the_permission_is_denied_by_name(
    farm_factory: FarmFactory, token_file: TokenFile
) -> None:
    reader = token_file.add("reader", ["read"], instances=["dev"])
    async with farm_factory() as farm, farm.channel(token=reader) as channel:
        other_instance = await refusal(channel, instance="ci")
        assert other_instance.code() == grpc.StatusCode.PERMISSION_DENIED
        assert other_instance.details() == (
            "GetActionResult: identity 'reader' (token) lacks the read permission on instance 'ci' "
            "(it has read on 'dev')"
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await re_grpc.ActionCacheStub(channel).UpdateActionResult(re_pb2.UpdateActionResultRequest(
                instance_name="dev", action_digest=DIGEST, action_result=re_pb2.ActionResult()))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "identity 'reader' (token) lacks the ac-write permission on instance 'dev'" in caught.value.details()
        # Its own instance and the ones below it are open to it: a plain miss.
        for instance in ("dev", "dev/linux"):
            miss = await refusal(channel, instance=instance)
            assert miss.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("algorithm", ["RS256", "ES256", "HS256"])
async def test_jwts_of_each_algorithm_name_their_identity(
    farm_factory: FarmFactory, issuer: TestIssuer, algorithm: str
) -> None:
    async with farm_factory(jwt=True) as farm:
        async with farm.channel(token=issuer.token("alice", ["read"], algorithm=algorithm)) as channel:
            assert (await refusal(channel)).code() == grpc.StatusCode.NOT_FOUND  # allowed: a miss
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await re_grpc.ActionCacheStub(channel).UpdateActionResult(re_pb2.UpdateActionResultRequest(
                    instance_name="main", action_digest=DIGEST, action_result=re_pb2.ActionResult()))
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "identity 'alice' (jwt) lacks the ac-write permission on instance 'main'" in caught.value.details()


async def test_bad_jwts_are_unauthenticated_with_the_reason(farm_factory: FarmFactory, issuer: TestIssuer) -> None:
    stranger = TestIssuer(issuer.jwks_path.with_name("stranger.json"))  # same key ids, other keys
    now = time.time()
    cases = {
        "expired JWT (it expired at": issuer.token("alice", ["read"], lifetime=-3600),
        "JWT not valid yet": issuer.token("alice", ["read"], not_before=now + 3600),
        "JWT with a bad signature": stranger.token("alice", ["read"]),
        "JWT with the wrong audience 'another-service'": issuer.token("alice", ["read"], audience="another-service"),
        "JWT from the wrong issuer 'https://elsewhere.test'": issuer.token("alice", ["read"],
                                                                          issuer="https://elsewhere.test"),
        "JWT key id 'rs256-9' is not in the JWKS file": issuer.token("alice", ["read"], kid="rs256-9"),
        "JWT says HS256 but key 'rs256-1' is a RS256 key": issuer.token("alice", ["read"], algorithm="HS256",
                                                                       kid="rs256-1"),
        "JWT claim 'permissions': unknown permission 'everything'": issuer.token("alice", ["everything"]),
    }
    async with farm_factory(jwt=True) as farm, farm.channel() as channel:
        for reason, token in cases.items():
            err = await refusal(channel, metadata=bearer(token))
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED, (reason, err.details())
            assert err.details().startswith(f"GetActionResult: {reason}"), (reason, err.details())
            assert token not in err.details()


async def test_anonymous_callers_get_the_anonymous_permissions_only(
    farm_factory: FarmFactory, token_file: TokenFile
) -> None:
    token_file.add("ci", EVERYTHING)
    async with farm_factory(anonymous=["read"]) as farm, farm.channel() as channel:
        assert (await refusal(channel)).code() == grpc.StatusCode.NOT_FOUND  # reads are open
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await re_grpc.ActionCacheStub(channel).UpdateActionResult(re_pb2.UpdateActionResultRequest(
                instance_name="main", action_digest=DIGEST, action_result=re_pb2.ActionResult()))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert caught.value.details().startswith(
            "UpdateActionResult: no credentials, and anonymous callers lack the ac-write permission on instance 'main'")
