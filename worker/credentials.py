"""How the worker proves who it is: TLS to the server (with a client certificate for
mTLS) and a bearer token, from ``[worker]`` or ``--tls-ca --tls-cert --tls-key
--token-file``.

The token file holds the token itself (keep it readable by the worker's user only);
it is re-read when it changes, so a token can be rotated without restarting the
worker. Certificates are read when the channel opens: a new client certificate takes
a worker restart (SIGTERM lets running actions finish first).
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from pathlib import Path
from typing import Any

import grpc

from cas.config import ConfigError
from cas.file_watch import FileWatch

AUTHORIZATION = "authorization"


def read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"token file {path}: {exc.strerror or exc}") from None
    if not token or any(c.isspace() for c in token):
        raise ConfigError(f"token file {path}: expected one token on one line")
    return token


def _read_bytes(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror or exc}") from None


def channel_credentials(ca: Path | None, cert: Path | None, key: Path | None) -> grpc.ChannelCredentials:
    """TLS to the server: ``ca`` (default: the system's roots), and a client certificate if given."""
    if (cert is None) != (key is None):
        raise ConfigError("tls_cert and tls_key go together: give both or neither")
    return grpc.ssl_channel_credentials(
        root_certificates=_read_bytes(ca, "tls_ca"),
        private_key=_read_bytes(key, "tls_key"),
        certificate_chain=_read_bytes(cert, "tls_cert"),
    )


class BearerToken(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer <token>`` to every call; the token file is re-read on change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._watch = FileWatch(path)
        self._watch.changed()
        self._header = f"Bearer {read_token(path)}"

    def header(self) -> str:
        if self._watch.changed():
            try:
                self._header = f"Bearer {read_token(self.path)}"
            except ConfigError:
                pass  # mid-rewrite or removed: keep the token read before
        return self._header

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add(AUTHORIZATION, self.header())
        return details._replace(metadata=metadata)  # type: ignore[attr-defined, no-any-return]

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)

    async def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: AsyncIterable[Any]
    ) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)

    async def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: AsyncIterable[Any]
    ) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)
