"""The Lua scripts of the Redis state, and how each is called.

Every transition is one script (lua/*.lua), each prefixed with lua/prelude.lua, the
steps they share, and with locality dispatch lua/locality.lua, its steps (only the
steps' functions it uses: script_text.py). Which
dispatch the scripts apply is a constant of their text (``LOCALITY``,
``dispatch_header``): a fifo state's scripts hold no locality step and send no
argument of it (only a branch on a constant ``false`` in ``assign`` and ``enqueue``). A script runs atomically in Redis, so no
other replica ever sees a transition half-applied. Scripts are sent by their SHA; a Redis that lost them (a
restart) gets them again on the next call (redis-py's Script does that).

Each call passes the context the prelude reads (ARGV[1..6]: key prefix, id nonce,
log streams on, stream retention, record TTL, replica id) before its own arguments,
and runs under the RedisGuard, so a failing Redis is UNAVAILABLE naming its URL.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from cas.redis.connection import RedisGuard
from server.scheduler.locality import EXPECTED, FIFO, URGENT_BELOW, Dispatch
from server.scheduler.state.redis.script_text import script_text

OTHERS_COMPARED = 16  # connected bots asked what they hold of an action a bot might take (as the memory state)
SKIP_WAITING = 64  # queued executions a claim's window passes by because they wait for another bot

Arg = str | bytes | int | float


def _lua(name: str) -> str:
    return resources.files(__package__).joinpath("lua", f"{name}.lua").read_text()


def dispatch_header(dispatch: Dispatch) -> str:
    """The constants every script starts with: which dispatch, and the bounds of locality's steps."""
    return (f"local LOCALITY = {'true' if dispatch.locality else 'false'}\n"
            f"local WINDOW, MAX_IDLE, EXPECTED, RETURN_WINDOW = {dispatch.window}, {dispatch.max_idle_scored}, "
            f"{EXPECTED}, {dispatch.return_window!r}\n"
            f"local MIN_HOME, MIN_GAIN, OTHERS = {dispatch.min_home}, {dispatch.min_gain}, {OTHERS_COMPARED}\n"
            f"local HOLDER_WAIT = {'true' if holder_wait(dispatch) else 'false'}\n"
            f"local HOLDER_WAIT_MAX, MAX_PASSES, SKIP_WAITING = {dispatch.holder_wait_max!r}, {dispatch.max_passes}, "
            f"{SKIP_WAITING}\n"
            f"local URGENT_BELOW = {URGENT_BELOW}\n")


def holder_wait(dispatch: Dispatch) -> bool:
    """Whether the scripts apply the wait for the holder (locality, ``wait_for_holder``, no ``wait``)."""
    return dispatch.locality and dispatch.wait_for_holder and dispatch.wait <= 0


class Scripts:
    """One registered script per transition; ``await scripts.call("claim", name, now)``."""

    def __init__(self, client: aioredis.Redis, guard: RedisGuard, context: list[Arg]) -> None:
        self.client = client
        self.guard = guard
        self.context = context  # ARGV[1..6], see lua/prelude.lua
        self.prefix = str(context[0])
        self._prelude = _lua("prelude") + "\n"
        self._header = dispatch_header(FIFO)
        self._scripts: dict[str, AsyncScript] = {}

    def set_dispatch(self, dispatch: Dispatch) -> None:
        """The dispatch rule the scripts apply (before the first call)."""
        self._header = dispatch_header(dispatch)
        self._prelude = _lua("prelude") + ("\n" + _lua("locality") if dispatch.locality else "") + "\n"
        self._scripts.clear()

    def _script(self, name: str) -> AsyncScript:
        script = self._scripts.get(name)
        if script is None:
            text = script_text(self._prelude, _lua(name))
            script = self._scripts[name] = self.client.register_script(self._header + text)
        return script

    async def call(self, name: str, *args: Arg) -> Any:
        with self.guard.calling(f"running the scheduler's {name}"):
            return await self._script(name)(args=[*self.context, *args])

    async def command(self, doing: str, *args: Arg) -> Any:
        """One plain Redis command (a read that needs no script)."""
        with self.guard.calling(doing):
            return await self.client.execute_command(*args)
