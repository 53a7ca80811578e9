"""Fixtures for the security tests: a CA, a token file, and real servers with TLS and
authentication (in-process, memory stores, remote execution on), with channels that
carry a token or a client certificate the way real clients do."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from server.app import ReapiServer
from server.auth.config import AnonymousConfig, AuthConfig, CertificateRule, JwtConfig, TlsConfig
from server.config import WILDCARD_INSTANCE, InstanceConfig, ServerConfig
from tests.support.certificates import Pair, TestPki
from tests.support.jwks import AUDIENCE, ISSUER, TestIssuer
from tests.support.servers import running_server
from tests.support.tokens import TokenFile, write_token_file
from cas.security.bearer import BearerToken

TEST_EXECUTION = {"worker_grace": 3600, "bot_long_poll_timeout": 5, "bot_session_timeout": 60, "tick_interval": 3600}
EVERYTHING = ["read", "write", "ac-write", "execute"]


def secure_config(tls: TlsConfig, auth: AuthConfig, http_listen: str = "", **execution: Any) -> ServerConfig:
    return ServerConfig(
        listen="127.0.0.1:0",
        http_listen=http_listen,
        stores={"mem": {"type": "memory"}, "cas": {"type": "verify", "inner": "mem"}, "ac": {"type": "memory"},
                "assets": {"type": "memory"}},
        instances=[InstanceConfig(name=WILDCARD_INSTANCE, cas="cas", ac="ac")],
        tls=tls,
        auth=auth,
        # The Remote Asset API, allowed to fetch from the tests' loopback origins.
        raw={"execution": {**TEST_EXECUTION, **execution}, "assets": {"allow_private_networks": True}},
    )


@dataclass
class Farm:
    """A secured server and what a test needs to call it as different identities."""

    server: ReapiServer
    pki: TestPki
    tokens: TokenFile
    workdir: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def channel(self, token: str | None = None, client: Pair | None = None, ca: Path | None = None) -> grpc.aio.Channel:
        """A TLS channel trusting the farm's CA, with a token on every call and/or a client certificate."""
        credentials = grpc.ssl_channel_credentials(
            (ca or self.pki.ca_cert).read_bytes(),
            client.key_pem() if client else None,
            client.cert_pem() if client else None,
        )
        interceptors = None
        if token is not None:
            path = write_token_file(self.workdir / "client-tokens" / f"{abs(hash(token))}", token)
            interceptors = BearerToken(path).interceptors()
        return grpc.aio.secure_channel(self.target, credentials, interceptors=interceptors)


FarmFactory = Callable[..., AbstractAsyncContextManager[Farm]]


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return TestPki(tmp_path / "pki")


@pytest.fixture
def token_file(tmp_path: Path) -> TokenFile:
    return TokenFile(tmp_path / "tokens.toml")


@pytest.fixture
def issuer(tmp_path: Path) -> TestIssuer:
    return TestIssuer(tmp_path / "jwks.json")


@pytest.fixture
def farm_factory(tmp_path: Path, pki: TestPki, token_file: TokenFile, issuer: TestIssuer) -> FarmFactory:
    """``async with farm_factory(anonymous=[...], client_ca=True, certificates=[...]) as farm``."""

    @asynccontextmanager
    async def make(*, anonymous: list[str] | None = None, client_ca: bool = False,
                   certificates: list[CertificateRule] | None = None, tokens: bool = True,
                   jwt: bool = False, http_listen: str = "", **execution: Any) -> AsyncIterator[Farm]:
        if not token_file.path.exists():
            token_file.write()
        server_pair = pki.server_certificate()
        tls = TlsConfig(cert=server_pair.cert, key=server_pair.key, client_ca=pki.ca_cert if client_ca else None)
        auth = AuthConfig(
            tokens=token_file.path if tokens else None,
            certificates=certificates or [],
            jwt=JwtConfig(jwks=issuer.jwks_path, audience=AUDIENCE, issuer=ISSUER) if jwt else None,
            anonymous=AnonymousConfig(permissions=anonymous) if anonymous is not None else None,
        )
        async with running_server(secure_config(tls, auth, http_listen, **execution)) as server:
            yield Farm(server, pki, token_file, tmp_path)

    return make
