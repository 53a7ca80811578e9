"""Who opened an operation or a bot session: what the authorizer asks before letting an
identity act on one by name.

Operations belong to the identity whose Execute made them (``admin`` may act on
anyone's); a bot session, and the bot id it was opened for, to the identity that
opened it. The scheduler remembers the owner (a principal, ``Identity.principal``)
with the record (server/scheduler/owners.py answers); ``RecordOwners`` asks it.
Unknown names answer None: the call goes on and the service answers NOT_FOUND as it
would without authentication.
"""

from __future__ import annotations

from typing import Protocol

from server.auth.methods import Owned


class Owners(Protocol):
    async def owner_of(self, kind: Owned, name: str) -> str | None: ...


class NoOwners:
    async def owner_of(self, kind: Owned, name: str) -> str | None:
        return None


class OwnerRecords(Protocol):
    """What the scheduler answers (owners are "" for records made without authentication)."""

    async def operation_owner(self, name: str) -> str | None: ...

    async def session_owner(self, name: str) -> str | None: ...

    async def bot_owner(self, bot_id: str) -> str | None: ...


class RecordOwners:
    def __init__(self, records: OwnerRecords) -> None:
        self.records = records

    async def owner_of(self, kind: Owned, name: str) -> str | None:
        if kind is Owned.OPERATION:
            owner = await self.records.operation_owner(name)
        elif kind is Owned.BOT_SESSION:
            owner = await self.records.session_owner(name)
        else:
            owner = await self.records.bot_owner(name)
        return owner or None
