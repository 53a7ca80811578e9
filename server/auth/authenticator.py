"""Who is calling: a bearer token (a JWT or a static token), else a client certificate
that a rule names, else the anonymous caller.

A bearer token that is present but wrong is refused even when a certificate would
have named the caller: a client that sends credentials means them.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from server.auth.certificates import CertificateRules, certificate_names, certificate_subject
from server.auth.errors import HOW_TO_AUTHENTICATE, Unauthenticated
from server.auth.jwt_verifier import JwtVerifier, looks_like_jwt
from server.auth.permissions import Identity, Permission, anonymous
from server.auth.tokens import TokenTable

AUTHORIZATION = "authorization"


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    """The token of the ``authorization: Bearer`` header; None without the header."""
    for key, value in metadata or ():
        if key == AUTHORIZATION:
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            scheme, _, token = text.strip().partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                raise Unauthenticated(f"the authorization header is not 'Bearer <token>'; {HOW_TO_AUTHENTICATE}")
            return token
    return None


class Authenticator:
    def __init__(
        self,
        tokens: TokenTable | None,
        jwt: JwtVerifier | None,
        certificates: CertificateRules,
        anonymous_caller: Identity,
    ) -> None:
        self.tokens = tokens
        self.jwt = jwt
        self.certificates = certificates
        self.anonymous = anonymous_caller

    def identify(self, context: grpc.aio.ServicerContext) -> Identity:
        token = bearer_token(context.invocation_metadata())
        if token is not None:
            return self._token_identity(token)
        if self.certificates:
            auth_context = context.auth_context()
            names = certificate_names(auth_context)
            if names:
                identity = self.certificates.identity(names)
                if identity is not None:
                    return identity
                note = f"the client certificate {certificate_subject(auth_context)!r} matches no certificate rule"
                return anonymous(self.anonymous.permissions, self.anonymous.scope, note)
        return self.anonymous

    def may_read(self, token: str | None) -> str | None:
        """For the HTTP console (server/console/access.py): None if ``token`` (None: no
        token) may read somewhere, else why not. Certificates play no part there."""
        try:
            identity = self.anonymous if token is None else self._token_identity(token)
        except Unauthenticated as err:
            return err.message
        if Permission.READ in identity.permissions:
            return None
        if identity.anonymous:
            return "no token, and anonymous callers may not read"
        return f"{identity.describe()} lacks the read permission"

    def _token_identity(self, token: str) -> Identity:
        if self.jwt is not None and looks_like_jwt(token):
            return self.jwt.identity(token)
        if self.tokens is not None:
            identity = self.tokens.lookup(token)
            if identity is not None:
                return identity
            raise Unauthenticated("unknown token: its sha256 is in no [[token]] of the token file (revoked or mistyped?)")
        if self.jwt is not None:
            raise Unauthenticated("the bearer token is not a JWT, and this server accepts only JWTs")
        raise Unauthenticated("this server accepts no bearer tokens (it identifies callers by client certificate)")
