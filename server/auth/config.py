"""``[server.tls]`` and ``[server.auth]``: how the port is secured and who may call.

    [server.tls]
    cert = "/etc/reapi/tls/server.crt"     # PEM chain; re-read when it changes
    key = "/etc/reapi/tls/server.key"
    client_ca = "/etc/reapi/tls/clients-ca.crt"   # clients must present a certificate it signed

    [server.auth]
    tokens = "/etc/reapi/tokens.toml"      # sha256 hashes only (server/auth/tokens.py)

    [server.auth.anonymous]                # calls with no credentials
    permissions = ["read"]

    [server.auth.jwt]
    jwks = "/etc/reapi/jwks.json"
    audience = "reapi"

    [[server.auth.certificates]]           # client certificate subjects -> identities
    subject = "*.workers.example.com"
    permissions = ["worker"]

docs/CONFIG.md documents every key, docs/SECURITY.md the model.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from cas.config import AtLeast, Duration
from server.auth.permissions import ALL_INSTANCES, InstanceScope, parse_permissions


class ClientCertificates(enum.Enum):
    REQUIRE = "require"
    OPTIONAL = "optional"


@dataclass(frozen=True)
class TlsConfig:
    """``[server.tls]``."""

    cert: Path | None = None
    """The server's certificate chain (PEM); with ``key``, the port speaks TLS only."""
    key: Path | None = None
    """The server's private key (PEM)."""
    client_ca: Path | None = None
    """CA certificates (PEM) that sign client certificates: with it, clients must present one."""
    client_certificates: ClientCertificates = ClientCertificates.REQUIRE
    """``require`` (the only mode grpcio can serve; see docs/SECURITY.md)."""

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together: give both or neither")
        if self.client_ca is not None and self.cert is None:
            raise ValueError("client_ca needs cert and key (client certificates are checked during TLS)")
        if self.client_certificates is ClientCertificates.OPTIONAL:
            raise ValueError(
                "client_certificates = 'optional' cannot be served: grpcio's server either requires a verified "
                "client certificate or asks for none; use 'require', or drop client_ca and authenticate with tokens"
            )

    @property
    def enabled(self) -> bool:
        return self.cert is not None

    @property
    def requires_client_certificates(self) -> bool:
        return self.client_ca is not None


def _checked_permissions(permissions: list[str], where: str) -> None:
    parse_permissions(permissions, where)


@dataclass(frozen=True)
class AnonymousConfig:
    """``[server.auth.anonymous]``: what calls without credentials may do."""

    permissions: list[str] = field(default_factory=list)
    """Permissions of callers with no token and no mapped certificate (default none)."""
    instances: list[str] = field(default_factory=lambda: [ALL_INSTANCES])
    """Instance-name prefixes they apply to."""

    def __post_init__(self) -> None:
        _checked_permissions(self.permissions, "permissions")


@dataclass(frozen=True)
class JwtConfig:
    """``[server.auth.jwt]``: bearer tokens that are JWTs, checked against a JWKS file."""

    jwks: Path
    """A JSON Web Key Set file (RSA, EC P-256 or symmetric keys); re-read when it changes."""
    audience: str | None = None
    """The ``aud`` a JWT must name (recommended: without it, JWTs with an ``aud`` are refused)."""
    issuer: str | None = None
    """The ``iss`` a JWT must name."""
    algorithms: list[str] = field(default_factory=lambda: ["RS256", "ES256", "HS256"])
    """Signature algorithms accepted (of RS256, ES256, HS256)."""
    identity_claim: str = "sub"
    """The claim that names the identity."""
    permissions_claim: str = "permissions"
    """The claim holding permissions (a list or a space-separated string), or role names with ``roles``."""
    instances_claim: str = "instances"
    """The claim holding instance-name prefixes; absent: every instance."""
    roles: dict[str, list[str]] = field(default_factory=dict)
    """``[server.auth.jwt.roles]``: role name -> permissions, when the claim holds roles."""
    leeway: Annotated[Duration, AtLeast(0)] = 30.0
    """Clock skew allowed when checking ``exp`` and ``nbf``."""

    def __post_init__(self) -> None:
        supported = ("RS256", "ES256", "HS256")
        for algorithm in self.algorithms:
            if algorithm not in supported:
                raise ValueError(f"algorithms: {algorithm!r} is not one of {', '.join(supported)}")
        if not self.algorithms:
            raise ValueError("algorithms must name at least one algorithm")
        for role, permissions in self.roles.items():
            _checked_permissions(permissions, f"roles.{role}")


@dataclass(frozen=True)
class CertificateRule:
    """One ``[[server.auth.certificates]]``: a client certificate subject -> an identity."""

    subject: str
    """Matched against the certificate's CN and each DNS, URI or e-mail SAN; ``*`` wildcards allowed."""
    permissions: list[str]
    """The identity's permissions."""
    name: str = ""
    """The identity's name; default: the CN or SAN that matched."""
    instances: list[str] = field(default_factory=lambda: [ALL_INSTANCES])
    """Instance-name prefixes the permissions apply to."""

    def __post_init__(self) -> None:
        if not self.subject:
            raise ValueError("subject must not be empty")
        _checked_permissions(self.permissions, f"certificate rule {self.subject!r}")

    @property
    def scope(self) -> InstanceScope:
        return InstanceScope(tuple(self.instances))


@dataclass(frozen=True)
class AuthConfig:
    """``[server.auth]``: when any method is set, every call is checked."""

    tokens: Path | None = None
    """The token file (``--auth-tokens`` overrides it): names, sha256 hashes and permissions."""
    jwt: JwtConfig | None = None
    """``[server.auth.jwt]``."""
    certificates: list[CertificateRule] = field(default_factory=list)
    """``[[server.auth.certificates]]``; they need ``[server.tls] client_ca``."""
    anonymous: AnonymousConfig | None = None
    """``[server.auth.anonymous]``; default: no permissions once any method is set."""

    @property
    def enabled(self) -> bool:
        return bool(self.tokens is not None or self.jwt is not None or self.certificates or self.anonymous is not None)
