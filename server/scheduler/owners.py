"""Who opened an operation or a bot session, as the scheduler's state remembers it.

The principal of the caller (server/auth) is kept with each operation
(``OperationState.owner``) and each session (``BotRegistration.owner``); the
permission check asks here before an identity acts on one by name. "" (no owner)
for records made without authentication; None for a name the state does not know.
"""

from __future__ import annotations

from server.scheduler.state.interface import SchedulerState


class StateOwners:
    def __init__(self, state: SchedulerState) -> None:
        self.state = state

    async def operation_owner(self, name: str) -> str | None:
        operation = await self.state.operation(name)
        return None if operation is None else operation.owner

    async def session_owner(self, name: str) -> str | None:
        session = await self.state.session(name)
        return None if session is None else session.registration.owner

    async def bot_owner(self, bot_id: str) -> str | None:
        name = await self.state.session_of_bot(bot_id)
        return None if name is None else await self.session_owner(name)
