"""Live log streams in Redis, so a client tails an action's output on any replica.

The bot writes through whichever replica it is connected to, the client reads
through another: both meet in Redis. Each stream is a hash (``lm:NAME``: committed
size, base, finished) and a Redis stream of appends (``ld:NAME``, each entry's id
its start offset + 1, so any offset is one XREVRANGE away); ``lw:WRITE_NAME`` names
the stream a write name writes. Appends, reads and status are one script each
(lua/log_*.lua); readers wait for the ``l:NAME`` wake-up (wakeups.py) between reads.

The scheduler state's scripts create a lease's streams when they assign it and
finish them when it ends (lua/prelude.lua ``create_log``, ``finish_log``); the
behaviour is that of server/logstreams.py: the newest ``max_bytes`` are kept,
finished streams are dropped ``retention`` seconds later (on the state's clock: a
stream due to be dropped reads as gone, and the scheduler's tick deletes it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from cas.errors import FailedPrecondition, InvalidArgument, NotFound, OutOfRange
from cas.store import READ_CHUNK_SIZE
from server.logstreams import DEFAULT_MAX_BYTES, NAME_PATTERN
from server.scheduler.clock import Clock
from server.scheduler.state.redis.backplane import Backplane
from server.scheduler.state.redis.codec import number, text


class RedisLogStreams:
    def __init__(self, backplane: Backplane, clock: Clock, max_bytes: int = DEFAULT_MAX_BYTES,
                 retention: float = 600.0) -> None:
        self.backplane = backplane
        self.clock = clock
        self.max_bytes = max_bytes
        self.retention = retention

    @staticmethod
    def owns(resource_name: str) -> bool:
        return NAME_PATTERN.match(resource_name) is not None

    async def _call(self, name: str, *args: str | bytes | int | float) -> object:
        await self.backplane.started()
        return await self.backplane.scripts.call(name, *args)

    async def open(self, parent: str) -> tuple[str, str]:
        reply = await self._call("log_create", parent, number(self.clock.now()))
        assert isinstance(reply, list)
        return text(reply[0]), text(reply[1])

    async def write(self, write_name: str, offset: int, data: bytes, finish: bool) -> int:
        _check_write_name(write_name)
        reply = await self._call("log_append", write_name, offset, data, "1" if finish else "0",
                                 number(self.clock.now()), self.max_bytes, number(self.retention))
        assert isinstance(reply, list)
        kind = reply[0]
        if kind == b"unknown":
            raise NotFound(f"log stream write name {write_name!r} is unknown or was dropped")
        if kind == b"offset":
            raise InvalidArgument(
                f"log stream write_offset {offset} does not match the {int(reply[1])} bytes already written"
            )
        if kind == b"finished":
            raise FailedPrecondition(f"log stream {write_name.rsplit('/write/', 1)[0]!r} is already finished")
        return int(reply[1])

    async def status(self, write_name: str) -> tuple[int, bool]:
        _check_write_name(write_name)
        reply = await self._call("log_status", write_name, number(self.clock.now()))
        if reply is None:
            raise NotFound(f"log stream write name {write_name!r} is unknown or was dropped")
        assert isinstance(reply, list)
        return int(reply[0]), reply[1] == b"1"

    async def read(self, name: str, offset: int = 0, limit: int = 0) -> AsyncIterator[bytes]:
        """From ``offset``, following the writer until it finishes (as LogStreamStore.read)."""
        match = NAME_PATTERN.match(name)
        if match is None:
            raise InvalidArgument(f"{name!r} is not a log stream name")
        if match.group("write"):
            raise InvalidArgument(f"{name!r} is a log stream's write resource name; read its name without /write/...")
        if offset < 0 or limit < 0:
            raise OutOfRange(f"read offset {offset} and limit {limit} must not be negative")
        end = offset + limit if limit else None
        position = offset
        started = False
        while end is None or position < end:
            waiter = self.backplane.wakeups.log_waiter(name)  # before reading: no append is missed
            try:
                most = READ_CHUNK_SIZE if end is None else min(READ_CHUNK_SIZE, end - position)
                reply = await self._call("log_read", name, position, most, number(self.clock.now()))
                if reply is None:
                    if started:
                        return  # dropped while we followed it: what was there was read
                    raise NotFound(f"log stream {name!r} is unknown or was dropped after its operation ended")
                assert isinstance(reply, list)
                committed, base, finished, data = int(reply[0]), int(reply[1]), reply[2] == b"1", reply[3]
                started = True
                if position < base:
                    raise OutOfRange(
                        f"log stream {name!r} dropped its first {base} bytes (it keeps the newest "
                        f"{self.max_bytes}); read from offset {base} or later"
                    )
                if data:
                    position += len(data)
                    yield data
                    continue
                if finished:
                    if position > committed:
                        raise OutOfRange(f"read offset {offset} is past the end of log stream {name!r} ({committed} bytes)")
                    return
                await waiter
            finally:
                waiter.cancel()

    def tick(self) -> None:
        """Nothing to do here: finished streams are dropped by the scheduler's tick."""

    async def aclose(self) -> None:
        await self.backplane.release()


def _check_write_name(write_name: str) -> None:
    match = NAME_PATTERN.match(write_name)
    if match is None or not match.group("write"):
        raise InvalidArgument(f"{write_name!r} is not a log stream write resource name (use LogStream.write_resource_name)")
