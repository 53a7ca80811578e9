"""The identity of the call in progress, for decisions that only a service can make.

The authorizer sets it before the service runs (each gRPC call runs in a task of its
own, so calls never see each other's). Nearly everything is decided by the
authorizer; what is left needs the service's knowledge: who owns a new operation or
bot session (``caller_principal``), and whether a Remote Asset fetch that missed the
cache may download (``caller_may``). With authentication off there is no caller and
everything is allowed.
"""

from __future__ import annotations

from contextvars import ContextVar

from cas.errors import ReapiError
from server.auth.errors import refused
from server.auth.permissions import Identity, Permission

_CALLER: ContextVar[Identity | None] = ContextVar("reapi_caller", default=None)


def set_caller(identity: Identity) -> None:
    _CALLER.set(identity)


def current_caller() -> Identity | None:
    return _CALLER.get()


def caller_principal() -> str:
    """The owner key for what this call creates; "" with authentication off."""
    caller = _CALLER.get()
    return caller.principal if caller is not None else ""


def caller_may(permission: Permission, instance_name: str) -> bool:
    caller = _CALLER.get()
    return caller is None or caller.may(permission, instance_name)


def refusal_unless(permission: Permission, instance_name: str, method: str, why: str) -> ReapiError | None:
    """The refusal to raise later if the caller lacks ``permission`` (``why``: what needs it)."""
    caller = _CALLER.get()
    if caller is None or caller.may(permission, instance_name):
        return None
    err = refused(caller, [permission], instance_name, method)
    return type(err)(f"{err.message}; {why}")
