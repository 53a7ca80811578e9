"""TLS on the port: plain text and untrusted or missing client certificates are refused
during the handshake (the client sees UNAVAILABLE, the server's log names the cause);
a trusted client certificate names its identity; certificates rotate without a restart.

Handshake refusals are checked against a real server process: its log (gRPC's own
line, at the default verbosity) is where an operator reads why a client was refused.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import grpc
import pytest

from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from server.auth.config import CertificateRule
from tests.security.conftest import FarmFactory
from tests.support.certificates import Pair, TestPki
from tests.support.server_process import ServerProcess, reapi_server_process, server_config
from tests.support.tokens import TokenFile, bearer

DIGEST = re_pb2.Digest(hash="cd" * 32, size_bytes=3)


async def get_action_result(channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...] | None = None,
                            instance: str = "main") -> grpc.StatusCode:
    try:
        await re_grpc.ActionCacheStub(channel).GetActionResult(
            re_pb2.GetActionResultRequest(instance_name=instance, action_digest=DIGEST), metadata=metadata, timeout=10)
    except grpc.aio.AioRpcError as err:
        if err.code() not in (grpc.StatusCode.NOT_FOUND,):
            raise
        return err.code()
    return grpc.StatusCode.OK


async def refused_at_handshake(channel: grpc.aio.Channel) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await get_action_result(channel)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
    return caught.value


def tls_channel(port: int, ca: Path, client: Pair | None = None) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(ca.read_bytes(), client.key_pem() if client else None,
                                               client.cert_pem() if client else None)
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials)


def wait_for_log(server: ServerProcess, pattern: str) -> None:
    server.process.wait_for_log(re.compile(pattern), 60)


@pytest.fixture
def mtls_server(tmp_path: Path, pki: TestPki, token_file: TokenFile):  # type: ignore[no-untyped-def]
    server_pair = pki.server_certificate()
    config = server_config(tmp_path / "server", stores={"cas": {"type": "memory"}, "ac": {"type": "memory"}},
                           server={
                               "tls": {"cert": str(server_pair.cert), "key": str(server_pair.key),
                                       "client_ca": str(pki.ca_cert)},
                               "auth": {"tokens": str(token_file.path),
                                        "certificates": [{"subject": "alice", "permissions": ["read"]}]},
                           })
    token_file.write()
    with reapi_server_process(tmp_path / "server", config) as server:
        yield server


def port_of(server: ServerProcess) -> int:
    return int(server.address.rsplit(":", 1)[1])


async def test_mtls_refuses_plain_text_and_missing_or_untrusted_certificates(
    mtls_server: ServerProcess, pki: TestPki, tmp_path: Path
) -> None:
    port = port_of(mtls_server)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plain:
        await refused_at_handshake(plain)
    wait_for_log(mtls_server, r"Handshake failed.*WRONG_VERSION_NUMBER")

    async with tls_channel(port, pki.ca_cert) as no_certificate:
        await refused_at_handshake(no_certificate)
    wait_for_log(mtls_server, r"Handshake failed.*PEER_DID_NOT_RETURN_A_CERTIFICATE")

    rogue = TestPki(tmp_path / "rogue", name="rogue CA").client_certificate("alice")  # the right name, the wrong CA
    async with tls_channel(port, pki.ca_cert, rogue) as untrusted:
        await refused_at_handshake(untrusted)
    wait_for_log(mtls_server, r"Handshake failed.*CERTIFICATE_VERIFY_FAILED")

    async with tls_channel(port, pki.ca_cert, pki.client_certificate("alice")) as trusted:
        assert await get_action_result(trusted) == grpc.StatusCode.NOT_FOUND  # in, and allowed to read
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await re_grpc.ActionCacheStub(trusted).UpdateActionResult(re_pb2.UpdateActionResultRequest(
                instance_name="main", action_digest=DIGEST, action_result=re_pb2.ActionResult()))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "identity 'alice' (certificate) lacks the ac-write permission on instance 'main'" in caught.value.details()
    assert not mtls_server.problems(), mtls_server.problems()


async def test_a_certificate_no_rule_names_is_anonymous_and_a_token_still_works(
    farm_factory: FarmFactory, pki: TestPki, token_file: TokenFile
) -> None:
    ci = token_file.add("ci", ["read", "write", "ac-write", "execute"])
    rules = [CertificateRule(subject="*.workers.test", permissions=["worker"])]
    async with farm_factory(client_ca=True, certificates=rules) as farm:
        bob = pki.client_certificate("bob")
        async with farm.channel(client=bob) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await get_action_result(channel)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "the client certificate 'CN=bob' matches no certificate rule" in caught.value.details()
            assert await get_action_result(channel, metadata=bearer(ci)) == grpc.StatusCode.NOT_FOUND
        worker = pki.client_certificate("w1", dns=("w1.workers.test",))
        async with farm.channel(client=worker) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await re_grpc.ActionCacheStub(channel).GetActionResult(
                    re_pb2.GetActionResultRequest(instance_name="main", action_digest=DIGEST))
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "identity 'w1.workers.test' (certificate) lacks the read permission" in caught.value.details()


def replace_file(path: Path, data: bytes) -> None:
    temporary = path.with_suffix(".new")
    temporary.write_bytes(data)
    os.replace(temporary, path)


async def test_server_certificate_and_client_ca_rotate_without_a_restart(
    farm_factory: FarmFactory, pki: TestPki, token_file: TokenFile, tmp_path: Path
) -> None:
    ci = token_file.add("ci", ["read"])
    async with farm_factory(client_ca=True) as farm:
        alice = pki.client_certificate("alice")
        async with farm.channel(token=ci, client=alice) as before:
            assert await get_action_result(before) == grpc.StatusCode.NOT_FOUND

        tls = farm.server.config.tls
        assert tls.cert is not None and tls.key is not None and tls.client_ca is not None
        new_pki = TestPki(tmp_path / "new-pki", name="next CA")
        new_server = new_pki.server_certificate()
        # Half-way: the new certificate beside the old key is not taken; the old pair still serves.
        replace_file(tls.cert, new_server.cert_pem())
        async with farm.channel(token=ci, client=alice) as midway:
            assert await get_action_result(midway) == grpc.StatusCode.NOT_FOUND
        replace_file(tls.key, new_server.key_pem())
        replace_file(tls.client_ca, new_pki.ca_cert.read_bytes())

        async with farm.channel(token=ci, client=alice) as old_trust:
            await refused_at_handshake(old_trust)  # the server now presents the new CA's certificate
        async with farm.channel(token=ci, client=alice, ca=new_pki.ca_cert) as old_client_cert:
            await refused_at_handshake(old_client_cert)  # and trusts only the new client CA
        new_alice = new_pki.client_certificate("alice")
        async with farm.channel(token=ci, client=new_alice, ca=new_pki.ca_cert) as after:
            assert await get_action_result(after) == grpc.StatusCode.NOT_FOUND
        assert farm.server.security is not None and farm.server.security.tls is not None
        assert farm.server.security.tls.reloads == 1
