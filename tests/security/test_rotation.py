"""Issue 9, acceptance 5 (tokens and keys): the token file and the JWKS file are re-read
when they change, with no restart; a file that stops parsing leaves the previous
tokens in force. Certificate rotation is in test_transport.py."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest

from cas.config import ConfigError
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from server.auth.tokens import TokenTable
from tests.security.conftest import FarmFactory
from tests.support.jwks import TestIssuer
from tests.support.tokens import TokenFile, bearer
from tests.support.waiting import until

DIGEST = re_pb2.Digest(hash="ef" * 32, size_bytes=3)


async def answered(channel: grpc.aio.Channel, token: str, wanted: grpc.StatusCode) -> None:
    """Call until the answer is ``wanted``: the server looks at its files at most every
    half second (server/auth/tokens.py RELOAD_INTERVAL), not on every call."""
    async def check() -> bool:
        return await status_for(channel, token) == wanted
    await until(check, f"{wanted} for the token", interval=0.05)


async def status_for(channel: grpc.aio.Channel, token: str) -> grpc.StatusCode:
    try:
        await re_grpc.ActionCacheStub(channel).GetActionResult(
            re_pb2.GetActionResultRequest(instance_name="main", action_digest=DIGEST), metadata=bearer(token))
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def test_tokens_are_added_rotated_and_revoked_without_a_restart(
    farm_factory: FarmFactory, token_file: TokenFile, caplog: pytest.LogCaptureFixture
) -> None:
    old = token_file.add("ci", ["read"])
    async with farm_factory() as farm, farm.channel() as channel:
        assert await status_for(channel, old) == grpc.StatusCode.NOT_FOUND  # allowed: a miss
        new = token_file.add("ci", ["read"])  # rotation: both hashes under one name for a while
        await answered(channel, new, grpc.StatusCode.NOT_FOUND)
        assert await status_for(channel, old) == grpc.StatusCode.NOT_FOUND
        token_file.entries = [e for e in token_file.entries if e is not token_file.entries[0]]
        token_file.write()
        await answered(channel, old, grpc.StatusCode.UNAUTHENTICATED)  # revoked
        assert await status_for(channel, new) == grpc.StatusCode.NOT_FOUND

        with caplog.at_level(logging.ERROR, logger="reapi.server.auth"):
            token_file.path.write_text("[[token]]\nname = 'half-written")

            async def noticed() -> bool:
                assert await status_for(channel, new) == grpc.StatusCode.NOT_FOUND  # the last good file stays
                return any("token file not reloaded" in r.getMessage() for r in caplog.records)
            await until(noticed, "the broken token file noticed", interval=0.05)
            assert await status_for(channel, new) == grpc.StatusCode.NOT_FOUND
        token_file.remove("ci")
        await answered(channel, new, grpc.StatusCode.UNAUTHENTICATED)


async def test_jwks_rotation_takes_new_keys_and_drops_old_ones(farm_factory: FarmFactory, issuer: TestIssuer) -> None:
    async with farm_factory(jwt=True) as farm, farm.channel() as channel:
        before = issuer.token("alice", ["read"], algorithm="ES256")
        assert await status_for(channel, before) == grpc.StatusCode.NOT_FOUND
        assert await status_for(channel, before) == grpc.StatusCode.NOT_FOUND  # the remembered verdict
        rotated = TestIssuer(issuer.jwks_path, generation=2)  # new keys, new key ids, same file
        await answered(channel, rotated.token("alice", ["read"], algorithm="ES256"), grpc.StatusCode.NOT_FOUND)
        assert await status_for(channel, before) == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(("text", "message"), [
    ('[[token]]\nname = "ci"\nsha256 = "abc"\n', "sha256 of 'ci' is not 64 hex digits"),
    ('[[token]]\nname = "ci"\nsha256 = "' + "a" * 64 + '"\npermissions = ["reed"]\n', "unknown permission 'reed'"),
    ('[[token]]\nname = "ci"\n', "missing required key 'sha256'"),
    ('[[token]]\nname = "a"\nsha256 = "' + "b" * 64 + '"\n[[token]]\nname = "b"\nsha256 = "' + "B" * 64 + '"\n',
     "repeats the hash of 'a'"),
    ('[[tokens]]\nname = "ci"\n', "unknown section 'tokens'"),
])
def test_a_bad_token_file_stops_the_server_at_start(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        TokenTable(path)
    assert str(path) in str(caught.value) and message in str(caught.value), str(caught.value)
