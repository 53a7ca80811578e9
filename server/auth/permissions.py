"""Permissions, the instance names they apply to, and the identity a call runs as.

A permission is granted on instance-name *prefixes*: ``"ci"`` covers the instance
``ci`` and every name below it (``ci/linux``), not ``cinema``; ``"*"`` covers every
name; ``""`` only the empty name. An identity holds one set of permissions on one set
of prefixes (a token, a JWT, a certificate rule or the anonymous caller).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

ALL_INSTANCES = "*"


class Permission(enum.Enum):
    READ = "read"  # Capabilities, FindMissing, BatchRead, ByteStream Read, GetTree, GetActionResult, cached assets
    WRITE = "write"  # BatchUpdate, ByteStream Write, Remote Asset Push
    AC_WRITE = "ac-write"  # UpdateActionResult
    EXECUTE = "execute"  # Execute, WaitExecution, its own operations, asset fetches that download
    WORKER = "worker"  # the Bots API and the CAS reads and writes and log writes a worker makes
    ADMIN = "admin"  # everyone's operations: list, get, wait, cancel, delete

    def __str__(self) -> str:
        return self.value


def parse_permissions(names: Iterable[str], where: str) -> frozenset[Permission]:
    """ValueError naming ``where`` and the known names for an unknown one."""
    known = {p.value: p for p in Permission}
    out = set()
    for name in names:
        permission = known.get(name)
        if permission is None:
            raise ValueError(f"{where}: unknown permission {name!r} (known: {', '.join(known)})")
        out.add(permission)
    return frozenset(out)


@dataclass(frozen=True)
class InstanceScope:
    """The instance names a grant covers: prefixes by whole path segments."""

    prefixes: tuple[str, ...] = (ALL_INSTANCES,)

    def covers(self, instance_name: str) -> bool:
        for prefix in self.prefixes:
            if prefix == ALL_INSTANCES or instance_name == prefix:
                return True
            if prefix and instance_name.startswith(prefix) and instance_name[len(prefix)] == "/":
                return True
        return False

    def __str__(self) -> str:
        return ", ".join(repr(p) for p in self.prefixes)


EVERY_INSTANCE = InstanceScope()


@dataclass(frozen=True)
class Identity:
    """Who a call runs as. ``name`` appears in logs and errors; secrets never do."""

    name: str
    permissions: frozenset[Permission]
    scope: InstanceScope = EVERY_INSTANCE
    method: str = "token"  # how it was established: token, jwt, certificate, anonymous, built-in
    note: str = ""  # for an anonymous caller: why it is one (a certificate no rule names)

    def may(self, permission: Permission, instance_name: str) -> bool:
        return permission in self.permissions and self.scope.covers(instance_name)

    def may_any(self, permissions: Iterable[Permission], instance_name: str) -> bool:
        return self.scope.covers(instance_name) and not self.permissions.isdisjoint(permissions)

    @property
    def principal(self) -> str:
        """The owner key of what this identity creates: a JWT's subject never passes for a token's name."""
        return f"{self.method}:{self.name}"

    @property
    def anonymous(self) -> bool:
        return self.method == "anonymous"

    def describe(self) -> str:
        """For messages: ``identity 'ci' (token)``, or ``anonymous caller``."""
        return "an anonymous caller" if self.anonymous else f"identity {self.name!r} ({self.method})"


def anonymous(permissions: frozenset[Permission], scope: InstanceScope = EVERY_INSTANCE, note: str = "") -> Identity:
    return Identity("anonymous", permissions, scope, method="anonymous", note=note)
