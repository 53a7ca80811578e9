"""Wake-ups between replicas: Redis pub/sub to the futures this replica waits on.

A transition on any replica publishes what it changed on one channel: ``s:N:SESSION``
(work assigned, a lease cancelled, the session closed, a newer call; N numbers the
session's wake-ups, so a held call ends only for one published after it held, never
for one still in flight from before), ``e:EXECUTION``
(a stage changed), ``l:LOGSTREAM`` (bytes appended, finished, dropped) and, with
locality's holder wait, ``w:REPLICA:EXECUTION`` (a wait ended in a script that replica
ran: it places the execution, placement.py). Each
replica listens and resolves its own waiters: held UpdateBotSession calls, operation
watches, log stream readers. So a bot held on replica B gets work queued on replica
A at once.

A message lost while the subscription is down is covered: on every (re)subscribe
and every disconnect all waiters are woken, so they read the state again (a held
call answers, a watch re-reads, a reader re-reads). A listener that hears nothing,
not even the answer to its own ping, for ``silence_limit`` seconds reconnects.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Iterable
from typing import Protocol

import redis.asyncio as aioredis

log = logging.getLogger("reapi.scheduler.redis")

PING_EVERY = 2.0


class Pokeable(Protocol):
    def poke(self) -> None: ...


class SessionWaiter:
    """A held call's future, resolved by the first wake-up numbered above ``after``
    (unknown until the hold script answers: numbers seen meanwhile are kept)."""

    __slots__ = ("future", "after", "latest")

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future
        self.after: int | None = None
        self.latest = -1

    def saw(self, number: int) -> None:
        self.latest = max(self.latest, number)
        if self.after is not None and self.latest > self.after:
            self.wake()

    def arm(self, after: int) -> None:
        self.after = after
        self.saw(-1)

    def wake(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


class Wakeups:
    def __init__(self, client: aioredis.Redis, channel: str, where: str, silence_limit: float = 6.0) -> None:
        self.client = client
        self.channel = channel
        self.where = where
        self.silence_limit = silence_limit
        self._sessions: dict[str, dict[asyncio.Future[None], SessionWaiter]] = {}
        self._watches: dict[str, weakref.WeakSet[Pokeable]] = {}
        self._logs: dict[str, set[asyncio.Future[None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self.on_wait_over: Callable[[str, str], None] | None = None  # (replica, execution): a 'w:' wake-up
        self.subscribed = asyncio.Event()
        self._ever_subscribed = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen_forever(), name="reapi-scheduler-wakeups")

    async def aclose(self) -> None:
        """Stop listening. Waiters are left as they are: the server cancels their calls
        (waking them here first could swallow that cancellation in asyncio.wait_for)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    # -- waiters -----------------------------------------------------------------

    def session_waiter(self, name: str) -> SessionWaiter:
        waiter = SessionWaiter(asyncio.get_running_loop().create_future())
        self._sessions.setdefault(name, {})[waiter.future] = waiter
        return waiter

    def forget_session_waiter(self, name: str, future: asyncio.Future[None]) -> None:
        waiters = self._sessions.get(name)
        if waiters is not None:
            waiters.pop(future, None)
            if not waiters:
                del self._sessions[name]

    def follow_execution(self, execution_id: str, watch: Pokeable) -> None:
        self._watches.setdefault(execution_id, weakref.WeakSet()).add(watch)

    def log_waiter(self, name: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._logs.setdefault(name, set())
        waiters.add(future)
        future.add_done_callback(lambda f: self._drop_log_waiter(name, f))
        return future

    def _drop_log_waiter(self, name: str, future: asyncio.Future[None]) -> None:
        waiters = self._logs.get(name)
        if waiters is not None:
            waiters.discard(future)
            if not waiters:
                del self._logs[name]

    # -- delivery ------------------------------------------------------------------

    def deliver(self, message: bytes) -> None:
        kind, _, name = message.decode().partition(":")
        if kind == "s":
            number, _, name = name.partition(":")
            for waiter in list(self._sessions.get(name, {}).values()):
                waiter.saw(int(number))
        elif kind == "e":
            watches = self._watches.get(name)
            if watches is not None:
                for watch in list(watches):
                    watch.poke()
                if not watches:
                    del self._watches[name]
        elif kind == "l":
            _resolve_all(list(self._logs.get(name, ())))
        elif kind == "w" and self.on_wait_over is not None:
            replica, _, execution_id = name.partition(":")
            self.on_wait_over(replica, execution_id)

    def wake_all(self) -> None:
        for session_waiters in list(self._sessions.values()):
            for waiter in list(session_waiters.values()):
                waiter.wake()
        for watches in list(self._watches.values()):
            for watch in list(watches):
                watch.poke()
        self._watches = {k: v for k, v in self._watches.items() if v}
        for waiters in list(self._logs.values()):
            _resolve_all(list(waiters))

    async def _listen_forever(self) -> None:
        failures = 0
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure of the subscription: resubscribe
                failures += 1
                if failures == 1 or failures % 60 == 0:
                    log.warning("%s: wake-ups interrupted (%s); waking every waiter and resubscribing", self.where, exc)
            self.subscribed.clear()
            self.wake_all()
            await asyncio.sleep(min(1.0, 0.1 * failures))

    async def _listen(self) -> None:
        pubsub = self.client.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            loop = asyncio.get_running_loop()
            heard = loop.time()
            pinged = False
            while True:
                message = await pubsub.get_message(timeout=PING_EVERY)
                now = loop.time()
                if message is None:
                    if now - heard > self.silence_limit:
                        raise TimeoutError(f"no answer from Redis for {now - heard:.1f}s")
                    if not pinged or now - heard > PING_EVERY:
                        await pubsub.ping()
                        pinged = True
                    continue
                heard = now
                kind = message.get("type")
                if kind == "subscribe":
                    if self._ever_subscribed:
                        self.wake_all()  # what was published while we were away is read again
                    self._ever_subscribed = True
                    self.subscribed.set()
                elif kind == "message":
                    self.deliver(message["data"])
        finally:
            await pubsub.aclose()


def _resolve_all(waiters: Iterable[asyncio.Future[None]]) -> None:
    for future in waiters:
        if not future.done():
            future.set_result(None)
