"""The security parts of one server, built from ``[server.tls]`` and ``[server.auth]``.

``build_security`` loads what must be valid before the server starts (certificates,
token file, JWKS: a mistake is a configuration error, not a server that refuses every
call later), and says how to bind the port and what wraps each handler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from cas.config import ConfigError
from server.auth.authenticator import Authenticator
from server.auth.certificates import CertificateRules
from server.auth.config import AuthConfig, TlsConfig
from server.auth.authorizer import Authorizer
from server.auth.owners import Owners
from server.auth.jwt_verifier import JwtVerifier
from server.auth.local_credential import LocalWorkerCredential, make_local_credential
from server.auth.permissions import InstanceScope, anonymous, parse_permissions
from server.auth.tls import ReloadingTls
from server.auth.tokens import TokenTable

log = logging.getLogger("reapi.server.auth")


@dataclass
class Security:
    tls: ReloadingTls | None
    authorizer: Authorizer | None
    tokens: TokenTable | None
    local_worker: LocalWorkerCredential | None = None

    def wrappers(self) -> list[Authorizer]:
        """The permission check, a HandlerWrapper (server/rpc_wrapping.py); none without auth."""
        return [self.authorizer] if self.authorizer is not None else []

    def read_check(self) -> Callable[[str | None], str | None] | None:
        """Who may see the HTTP console (the same tokens as the gRPC port); None: anyone."""
        return self.authorizer.authenticator.may_read if self.authorizer is not None else None

    def bind(self, server: grpc.aio.Server, listen: str) -> int:
        """Open the port (TLS when configured); 0 if it could not be bound."""
        if self.local_worker is not None and self.local_worker.socket_address is not None:
            server.add_insecure_port(self.local_worker.socket_address)
        if self.tls is not None:
            return server.add_secure_port(listen, self.tls.credentials())
        return server.add_insecure_port(listen)

    def close(self) -> None:
        if self.local_worker is not None:
            self.local_worker.remove()


def build_authenticator(auth: AuthConfig, tls: TlsConfig, tokens: TokenTable | None) -> Authenticator:
    if auth.certificates and not tls.requires_client_certificates:
        raise ConfigError("[[server.auth.certificates]] need [server.tls] client_ca: without it no client "
                          "certificate is asked for")
    jwt = None
    if auth.jwt is not None:
        try:
            jwt = JwtVerifier(auth.jwt)
        except ValueError as exc:
            raise ConfigError(f"[server.auth.jwt]: {exc}") from None
    guest = auth.anonymous
    permissions = parse_permissions(guest.permissions, "[server.auth.anonymous]") if guest else frozenset()
    scope = InstanceScope(tuple(guest.instances)) if guest else InstanceScope()
    return Authenticator(tokens, jwt, CertificateRules(auth.certificates), anonymous(permissions, scope))


def build_security(tls: TlsConfig, auth: AuthConfig, owners: Owners | None = None,
                   local_worker: bool = False) -> Security:
    """``local_worker``: this server starts its own worker, which needs a way in."""
    reloading = ReloadingTls(tls) if tls.enabled else None
    if not auth.enabled:
        credential = make_local_credential(None, own_socket=True) if local_worker and reloading else None
        return Security(reloading, None, None, credential)
    tokens = TokenTable(auth.tokens) if auth.tokens is not None or local_worker else None
    authorizer = Authorizer(build_authenticator(auth, tls, tokens), owners)
    credential = make_local_credential(tokens, own_socket=reloading is not None) if local_worker else None
    methods = [name for name, on in (("tokens", auth.tokens is not None), ("JWT", auth.jwt is not None),
                                     ("client certificates", bool(auth.certificates))) if on]
    log.info("authentication on: %s; anonymous callers may %s", ", ".join(methods) or "anonymous only",
             ", ".join(auth.anonymous.permissions) if auth.anonymous and auth.anonymous.permissions else "nothing")
    return Security(reloading, authorizer, tokens, credential)
