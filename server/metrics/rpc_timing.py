"""``reapi_rpc_duration_seconds``: each call timed from its handler's start to its
last response, labelled with the method and the status code it ended with.

The code comes from the call's context (set by ``context.abort`` in
server/boundary.py); a call that ends by an exception that is not an abort is
UNKNOWN, as gRPC reports it, and one whose client went away is CANCELLED. The
labelled children are made once per method and code, so a call costs two clock
reads and one histogram observation.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from prometheus_client import Histogram

_NAMES = {code: code.name for code in grpc.StatusCode}


def short_method(method: str) -> str:
    """``/build.bazel.remote.execution.v2.ActionCache/GetActionResult`` -> ``ActionCache/GetActionResult``."""
    service, _, name = method.lstrip("/").partition("/")
    return f"{service.rsplit('.', 1)[-1]}/{name}"


class _MethodTimer:
    """The children of one method, by code name."""

    __slots__ = ("histogram", "method", "children")

    def __init__(self, histogram: Histogram, method: str) -> None:
        self.histogram = histogram
        self.method = method
        self.children: dict[str, Any] = {"OK": histogram.labels(method, "OK")}

    def observe(self, context: grpc.aio.ServicerContext, failed: bool, seconds: float) -> None:
        name = "OK"
        code = context.code()
        if code is not None and code is not grpc.StatusCode.OK:
            name = _NAMES.get(code, str(code))
        elif failed:
            name = "CANCELLED" if context.cancelled() else "UNKNOWN"
        child = self.children.get(name)
        if child is None:
            child = self.children[name] = self.histogram.labels(self.method, name)
        child.observe(seconds)


class RpcTiming:
    """A ``HandlerWrapper`` (server/rpc_wrapping.py) that times every call."""

    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        timer = _MethodTimer(self.histogram, short_method(method))
        if handler.response_streaming:
            kind = "stream_stream" if handler.request_streaming else "unary_stream"
            return handler._replace(**{kind: _timed_stream(timer, getattr(handler, kind))})  # type: ignore[attr-defined]
        kind = "stream_unary" if handler.request_streaming else "unary_unary"
        return handler._replace(**{kind: _timed_unary(timer, getattr(handler, kind))})  # type: ignore[attr-defined]


def _timed_unary(timer: _MethodTimer, behaviour: Any) -> Any:
    clock = time.perf_counter

    async def timed(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = clock()
        try:
            response = await behaviour(request, context)
        except BaseException:
            timer.observe(context, True, clock() - started)
            raise
        timer.observe(context, False, clock() - started)
        return response

    return timed


def _timed_stream(timer: _MethodTimer, behaviour: Any) -> Any:
    clock = time.perf_counter

    async def timed(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        started = clock()
        try:
            async for response in behaviour(request, context):
                yield response
        except BaseException:
            timer.observe(context, True, clock() - started)
            raise
        timer.observe(context, False, clock() - started)

    return timed
