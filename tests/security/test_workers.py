"""Issue 9, acceptance 4 and the worker's side of 1: real reapi-worker processes reach a
secured server over TLS with a token or a client certificate and run actions; bots
without ``worker`` are refused while the authenticated workers keep running actions;
the zero-config server's own worker gets a credential of its own when auth is on."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import grpc
import pytest

from cas.errors import ReapiError
from tests.support.certificates import Pair, TestPki
from tests.support.logged_process import LoggedProcess
from tests.support.server_process import reapi_server_process, server_config
from tests.support.test_bot import TestBot
from tests.support.tokens import TokenFile, bearer, write_token_file
from tests.support.worker_process import reapi_worker_process
from tests.worker.actions import ActionClient
from cas.security.bearer import BearerToken

LISTENING = re.compile(r"listening on (\S+:\d+)")
SESSION = re.compile(r"bot session \S+ created")
CLIENT = ["read", "write", "execute"]


def secure_server(tmp_path: Path, pki: TestPki, tokens: TokenFile, *, client_ca: bool = False,
                  certificates: list[dict[str, object]] | None = None) -> dict[str, object]:
    pair = pki.server_certificate()
    tls = {"cert": str(pair.cert), "key": str(pair.key)}
    if client_ca:
        tls["client_ca"] = str(pki.ca_cert)
    auth: dict[str, object] = {"tokens": str(tokens.path)}
    if certificates:
        auth["certificates"] = certificates
    return server_config(tmp_path / "server", stores={"mem": {"type": "memory"}, "cas": {"type": "verify", "inner": "mem"},
                                                       "ac": {"type": "memory"}},
                         server={"tls": tls, "auth": auth})


def client_channel(address: str, pki: TestPki, token_path: Path | None = None,
                   pair: Pair | None = None) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        pki.ca_cert.read_bytes(), pair.key_pem() if pair else None, pair.cert_pem() if pair else None)
    interceptors = BearerToken(token_path).interceptors() if token_path else None
    return grpc.aio.secure_channel(address, credentials, interceptors=interceptors)


async def run_echo(channel: grpc.aio.Channel, text: str) -> bytes:
    client = ActionClient(channel)
    response = await client.run(["sh", "-c", f"echo {text}"])
    assert response.status.code == 0 and response.result.exit_code == 0, response
    return await client.blob(response.result.stdout_digest)


async def test_token_worker_over_tls_runs_actions_and_rogue_bots_are_refused(tmp_path: Path) -> None:
    pki = TestPki(tmp_path / "pki")
    tokens = TokenFile(tmp_path / "tokens.toml")
    worker_token = write_token_file(tmp_path / "worker.token", tokens.add("workers", ["worker"]))
    client_token = write_token_file(tmp_path / "client.token", tokens.add("ci", CLIENT))
    with reapi_server_process(tmp_path / "server", secure_server(tmp_path, pki, tokens)) as server, \
            reapi_worker_process(tmp_path / "w1", f"grpcs://{server.address}", extra_args=[
                "--tls-ca", str(pki.ca_cert), "--token-file", str(worker_token)]) as worker:
        async with client_channel(server.address, pki, client_token) as channel:
            assert await run_echo(channel, "over TLS") == b"over TLS\n"
            # A build client's token does not make a bot, nor does no token.
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await TestBot(channel, bot_id="rogue").create()
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "identity 'ci' (token) lacks the worker permission" in caught.value.details()
            assert await run_echo(channel, "still served") == b"still served\n"
        async with client_channel(server.address, pki) as anonymous:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await TestBot(anonymous, bot_id="rogue").create()
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "rogue" not in worker.log_text()
        assert not worker.problems(), worker.problems()
        assert "refused a call" in server.process.log_text()


async def test_worker_with_a_client_certificate_under_required_mtls(tmp_path: Path) -> None:
    pki = TestPki(tmp_path / "pki")
    tokens = TokenFile(tmp_path / "tokens.toml")
    client_token = write_token_file(tmp_path / "client.token", tokens.add("ci", CLIENT))
    rules: list[dict[str, object]] = [{"subject": "*.workers.test", "permissions": ["worker"]}]
    worker_pair = pki.client_certificate("w1", dns=("w1.workers.test",))
    config = secure_server(tmp_path, pki, tokens, client_ca=True, certificates=rules)
    with reapi_server_process(tmp_path / "server", config) as server, \
            reapi_worker_process(tmp_path / "w1", f"grpcs://{server.address}", extra_args=[
                "--tls-ca", str(pki.ca_cert), "--tls-cert", str(worker_pair.cert),
                "--tls-key", str(worker_pair.key)]) as worker:
        bazel_like = pki.client_certificate("developer-laptop")
        async with client_channel(server.address, pki, client_token, bazel_like) as channel:
            assert await run_echo(channel, "mutual") == b"mutual\n"
        assert not worker.problems(), worker.problems()


def test_worker_refuses_tls_options_without_grpcs(tmp_path: Path) -> None:
    import subprocess

    result = subprocess.run([sys.executable, "-m", "worker.app", "--server", "grpc://127.0.0.1:1",
                             "--tls-ca", str(tmp_path / "ca.crt")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "tls_ca, tls_cert and tls_key need a grpcs:// server" in result.stderr


async def test_zero_config_server_with_tls_and_tokens_authenticates_its_own_worker(tmp_path: Path) -> None:
    pki = TestPki(tmp_path / "pki")
    pair = pki.server_certificate()
    tokens = TokenFile(tmp_path / "tokens.toml")
    client_token = write_token_file(tmp_path / "client.token", tokens.add("ci", CLIENT))
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    server = LoggedProcess("reapi-server", [
        sys.executable, "-m", "server.app", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
        "--tls-cert", str(pair.cert), "--tls-key", str(pair.key), "--auth-tokens", str(tokens.path),
    ], tmp_path / "server.log", env=env)
    server.start()
    try:
        address = server.wait_for_log(LISTENING, 30).group(1)
        server.wait_for_log(SESSION, 30)
        async with client_channel(address, pki, client_token) as channel:
            assert await run_echo(channel, "from the local worker") == b"from the local worker\n"
        async with client_channel(address, pki) as anonymous:
            with pytest.raises(ReapiError) as refused:
                await ActionClient(anonymous).run(["true"])
            assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
        log = server.log_text()
        assert "authentication on: tokens" in log
        assert "security: TLS; tokens; anonymous callers: nothing (docs/SECURITY.md)" in log
        private = re.search(r"--token-file (\S+)", " ".join(open(f"/proc/{p}/cmdline").read().replace("\0", " ")
                                                            for p in _children(server.pid)))
        assert private is not None, "the local worker was not given a token file"
        token_path = Path(private.group(1))
        assert token_path.stat().st_mode & 0o077 == 0 and token_path.parent.stat().st_mode & 0o077 == 0
        assert token_path.read_text() not in log
    finally:
        assert server.stop() == 0
    assert not token_path.parent.exists(), "the local worker's credential outlived the server"
    assert not [line for line in server.log_text().splitlines() if " ERROR " in line]


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def test_bearer_header_is_sent_by_the_worker_credential(tmp_path: Path) -> None:
    path = write_token_file(tmp_path / "t", "abc")
    token = BearerToken(path)
    assert token.header() == "Bearer abc"
    write_token_file(path, "rotated")
    assert token.header() == "Bearer rotated"
    assert bearer("x") == (("authorization", "Bearer x"),)
