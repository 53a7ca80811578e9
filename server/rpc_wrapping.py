"""One interceptor that wraps each method's handler once, for every concern that
must see each call (its timing today; its permission check with server/auth).

grpc.aio's interceptors see a method name, not the request, and each installed
interceptor costs an extra coroutine per call. So there is one: it asks each
``HandlerWrapper`` in turn to wrap the method's handler, outermost last, remembers
the result per method, and per call does a dict look-up. A wrapper returns the
handler unchanged for methods it does not care about.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import grpc


class HandlerWrapper(Protocol):
    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """``handler`` with this concern around each call of ``method``."""


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, wrappers: Sequence[HandlerWrapper]) -> None:
        self.wrappers = list(wrappers)
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method  # type: ignore[attr-defined]
        handler = self._handlers.get(method)
        if handler is None:
            handler = await continuation(handler_call_details)
            if handler is None:
                return None  # type: ignore[return-value]  # an unknown method: UNIMPLEMENTED
            for wrapper in self.wrappers:
                handler = wrapper.wrap(method, handler)
            self._handlers[method] = handler
        return handler


def interceptors(wrappers: Sequence[HandlerWrapper]) -> list[grpc.aio.ServerInterceptor]:
    """No interceptor at all when nothing wraps: a server without metrics pays nothing."""
    return [WrappingInterceptor(wrappers)] if wrappers else []
