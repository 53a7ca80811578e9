"""The one place where internal errors become gRPC statuses.

Service methods raise ``ReapiError`` subclasses (or let them propagate from the
stores); these decorators turn them into ``context.abort`` with the code, the
message and any google.rpc details (PreconditionFailure, BadRequest) in the
``grpc-status-details-bin`` trailer, where REv2 clients look for them.
Anything else is a bug: it is logged with its traceback and reported as INTERNAL.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc

from cas.errors import Internal, NotFound, ReapiError
from cas.released import drop_tracebacks
from server.request_metadata import describe_client, request_metadata

log = logging.getLogger("reapi.server")

STATUS_DETAILS_KEY = "grpc-status-details-bin"

Req = TypeVar("Req")
Resp = TypeVar("Resp")


async def abort(context: grpc.aio.ServicerContext, err: ReapiError) -> NoReturn:
    trailing: tuple[tuple[str, bytes], ...] = ()
    if err.details:
        trailing = ((STATUS_DETAILS_KEY, err.to_status().SerializeToString()),)
    await context.abort(err.code, err.message, trailing_metadata=trailing)
    raise AssertionError("unreachable: context.abort raises")


def _as_reapi_error(exc: Exception, method: str, context: grpc.aio.ServicerContext) -> ReapiError:
    """The status to answer with; the failure's frames then let go of what they held
    (the request's data, a write's buffers) at once (cas/released.py)."""
    try:
        return _converted(exc, method, context)
    finally:
        drop_tracebacks(exc)


def _converted(exc: Exception, method: str, context: grpc.aio.ServicerContext) -> ReapiError:
    if isinstance(exc, ReapiError):
        # Clients see these; an operator chasing a client's complaint finds it at INFO,
        # with the tool and invocation. NOT_FOUND is an answer (a cache miss), not a mistake.
        level = logging.DEBUG if isinstance(exc, NotFound) else logging.INFO
        if log.isEnabledFor(level):
            client = describe_client(request_metadata(context.invocation_metadata()))
            log.log(level, "%s answered %s%s", method, exc, f" (to {client})" if client else "")
        return exc
    log.exception("unexpected error in %s", method)
    return Internal(f"{method}: unexpected {type(exc).__name__}: {exc}")


def unary(method: Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]):  # type: ignore[no-untyped-def]
    """For unary-response methods (unary-unary and stream-unary)."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - converted, never swallowed
            await abort(context, _as_reapi_error(exc, method.__qualname__, context))

    return wrapper


def streaming(method: Callable[[Any, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]]):  # type: ignore[no-untyped-def]
    """For stream-response methods written as async generators."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> AsyncIterator[Resp]:
        try:
            async for response in method(self, request, context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - converted, never swallowed
            await abort(context, _as_reapi_error(exc, method.__qualname__, context))

    return wrapper
