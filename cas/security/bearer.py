"""A bearer token on every call, from a token file re-read when it changes.

The worker's ``token_file`` (``--token-file``) and a ``grpc`` store's ``token_file``
(a frontend's token for its storage nodes) both hold the token itself: keep the
file readable by that user only. It is re-read when it changes, so a token can be
rotated without a restart; a file caught half-written keeps the token read before.
The token is only ever put in the ``authorization`` header, never in a message.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from pathlib import Path
from typing import Any

import grpc

from cas.config.values import ConfigError
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


class BearerToken:
    """The ``authorization: Bearer <token>`` header; the token file is re-read on change."""

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

    def details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add(AUTHORIZATION, self.header())
        return details._replace(metadata=metadata)  # type: ignore[attr-defined, no-any-return]

    def interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        """One interceptor per kind of call: grpc.aio files each interceptor under one kind only."""
        return [_UnaryUnary(self), _UnaryStream(self), _StreamUnary(self), _StreamStream(self)]


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, token: BearerToken) -> None:
        self.token = token

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self.token.details(client_call_details), request)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, token: BearerToken) -> None:
        self.token = token

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self.token.details(client_call_details), request)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, token: BearerToken) -> None:
        self.token = token

    async def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: AsyncIterable[Any]
    ) -> Any:
        return await continuation(self.token.details(client_call_details), request_iterator)


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, token: BearerToken) -> None:
        self.token = token

    async def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: AsyncIterable[Any]
    ) -> Any:
        return await continuation(self.token.details(client_call_details), request_iterator)
