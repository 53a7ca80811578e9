"""The one permission check: every call, before its service runs.

``Authorizer`` is a HandlerWrapper (server/rpc_wrapping.py): each method's handler is
wrapped once, when its service is added, so nothing runs per call but the wrapper
(a grpc.aio interceptor would cost a coroutine and a handler look-up per call, and
sees neither the request nor the TLS peer). The wrapper gets the request (for a
streaming request, its first message) and the call's context, asks the
authenticator who is calling, looks the method up in ``methods.RULES`` and refuses
the call (UNAUTHENTICATED or PERMISSION_DENIED, with a message naming the cause)
before the service sees it. Without ``[server.auth]`` there is no Authorizer at all:
the zero-config server pays nothing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from cas.errors import PermissionDenied, ReapiError
from server.auth.authenticator import Authenticator
from server.auth.caller import set_caller
from server.auth.errors import not_owner, refused
from server.auth.methods import RULES, MethodRule, Owned
from server.auth.owners import NoOwners, Owners
from server.auth.permissions import Identity, Permission
from server.boundary import abort

log = logging.getLogger("reapi.server.auth")


async def _chain(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    yield first
    async for item in rest:
        yield item


async def _nothing() -> AsyncIterator[Any]:
    return
    yield  # an empty async generator


class Authorizer:
    def __init__(self, authenticator: Authenticator, owners: Owners | None = None) -> None:
        self.authenticator = authenticator
        self.owners: Owners = owners or NoOwners()

    # -- the decision ------------------------------------------------------------

    def identify(self, rule: MethodRule, context: grpc.aio.ServicerContext) -> Identity | ReapiError:
        try:
            return self.authenticator.identify(context)
        except ReapiError as exc:
            return exc.with_context(rule.short_name)

    def admit(self, rule: MethodRule, request: Any, context: grpc.aio.ServicerContext,
              identity: Identity | ReapiError | None = None) -> Identity | ReapiError:
        """The caller if it holds the permission on the instance (and it is set for the
        service), else the refusal. Ownership, for the few methods with ``owned``, is
        ``check_owner``'s."""
        if identity is None:
            identity = self.identify(rule, context)
        if isinstance(identity, ReapiError):
            return identity
        instance = rule.instance(request)
        needs = rule.permissions_for(request)
        if not identity.may_any(needs, instance):
            return refused(identity, needs, instance, rule.short_name)
        set_caller(identity)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s by %s on instance %r", rule.short_name, identity.describe(), instance)
        return identity

    async def check_owner(self, identity: Identity, rule: MethodRule, request: Any) -> ReapiError | None:
        assert rule.owned is not None and rule.owned_name is not None
        name = rule.owned_name(request)
        owner = await self.owners.owner_of(rule.owned, name)
        if owner is None or owner == identity.principal:
            return None
        if rule.owned is Owned.OPERATION:
            if identity.may(Permission.ADMIN, rule.instance(request)):
                return None
            return not_owner(identity, "operation", name, owner, rule.short_name,
                             "acting on another identity's operations needs the admin permission")
        return not_owner(identity, rule.owned.value, name, owner, rule.short_name,
                         "a bot session is bound to the identity that opened it")

    async def check(self, rule: MethodRule, request: Any, context: grpc.aio.ServicerContext,
                    identity: Identity | ReapiError | None = None) -> None:
        """Abort the call unless ``admit`` lets it in and, for owned things, it is the caller's."""
        verdict = self.admit(rule, request, context, identity)
        if isinstance(verdict, ReapiError):
            await self._refuse(verdict, context)
        elif rule.owned is not None:
            not_theirs = await self.check_owner(verdict, rule, request)
            if not_theirs is not None:
                await self._refuse(not_theirs, context)

    async def _refuse(self, err: ReapiError, context: grpc.aio.ServicerContext) -> None:
        log.info("refused a call from %s: %s", context.peer(), err)
        await abort(context, err)

    # -- wrapping each kind of handler -------------------------------------------------

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """``handler`` checked before each call (once per method, when it is added)."""
        rule = RULES.get(method)
        if rule is None:
            return self._refusing(method, handler)
        if handler.request_streaming and not handler.response_streaming:
            return handler._replace(stream_unary=self._stream_unary(rule, handler.stream_unary))  # type: ignore[attr-defined]
        if handler.response_streaming and not handler.request_streaming:
            return handler._replace(unary_stream=self._unary_stream(rule, handler.unary_stream))  # type: ignore[attr-defined]
        if not handler.request_streaming:
            return handler._replace(unary_unary=self._unary_unary(rule, handler.unary_unary))  # type: ignore[attr-defined]
        return self._refusing(method, handler)  # no bidirectional method is served

    def _unary_unary(self, rule: MethodRule, behaviour: Any) -> Any:
        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await self.check(rule, request, context)
            return await behaviour(request, context)

        return unary_unary

    def _unary_stream(self, rule: MethodRule, behaviour: Any) -> Any:
        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await self.check(rule, request, context)
            async for response in behaviour(request, context):
                yield response

        return unary_stream

    def _stream_unary(self, rule: MethodRule, behaviour: Any) -> Any:
        async def stream_unary(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            identity = self.identify(rule, context)
            if isinstance(identity, ReapiError):  # refuse a stranger before reading what it sends
                await self._refuse(identity, context)
            first = await anext(aiter(requests), None)
            if first is None:
                return await behaviour(_nothing(), context)
            await self.check(rule, first, context, identity)
            return await behaviour(_chain(first, requests), context)

        return stream_unary

    def _refusing(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        err = PermissionDenied(f"{method} has no permission rule on this server; it is refused")

        async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await self._refuse(err, context)

        async def refuse_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await self._refuse(err, context)
            yield None

        kind = ("stream" if handler.request_streaming else "unary") + "_" + (
            "stream" if handler.response_streaming else "unary")
        return handler._replace(**{kind: refuse_stream if handler.response_streaming else refuse})  # type: ignore[attr-defined]
