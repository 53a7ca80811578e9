"""The two refusals, with messages that name the cause and never a secret.

UNAUTHENTICATED: the credentials are missing or wrong (no token, unknown token,
expired JWT, bad signature, wrong audience), or an anonymous caller asked for what
anonymous callers may not do. PERMISSION_DENIED: a known identity lacks the
permission on the instance; the message names the identity, the permission, the
instance and the method.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from cas.errors import PermissionDenied, ReapiError
from server.auth.permissions import Identity, Permission

HOW_TO_AUTHENTICATE = (
    "send 'authorization: Bearer <token>' (Bazel: --remote_header=authorization=Bearer <token>)"
)


class Unauthenticated(ReapiError):
    code = grpc.StatusCode.UNAUTHENTICATED


def _needs(permissions: Iterable[Permission]) -> str:
    wanted = set(permissions)
    names = [str(p) for p in Permission if p in wanted]  # in the enum's order: read, write, ..., admin
    return " or ".join(names)


def refused(identity: Identity, needs: Iterable[Permission], instance_name: str, method: str) -> ReapiError:
    """The error for ``identity`` lacking every permission in ``needs`` on the instance."""
    needs = list(needs)
    if identity.anonymous:
        why = f"no credentials ({identity.note})" if identity.note else "no credentials"
        return Unauthenticated(
            f"{method}: {why}, and anonymous callers lack the {_needs(needs)} permission on instance "
            f"{instance_name!r}; {HOW_TO_AUTHENTICATE} or present a client certificate"
        )
    held = ", ".join(sorted(str(p) for p in identity.permissions)) or "no permissions"
    return PermissionDenied(
        f"{method}: {identity.describe()} lacks the {_needs(needs)} permission on instance {instance_name!r} "
        f"(it has {held} on {identity.scope})"
    )


def not_owner(identity: Identity, kind: str, name: str, owner: str, method: str, remedy: str = "") -> ReapiError:
    """``identity`` acting on a ``kind`` (operation, bot session) that ``owner`` opened."""
    return PermissionDenied(
        f"{method}: {kind} {name!r} belongs to identity {owner!r}, not to {identity.describe()}"
        + (f" ({remedy})" if remedy else "")
    )
