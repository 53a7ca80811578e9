"""Live log streams: an action's stdout and stderr while it runs.

A stream has a read name, which clients find in ExecuteOperationMetadata, and a
write name only its writer (the bot holding the lease) knows. Readers follow a
stream like ``tail -f``: they get what is there, then wait for more until the
writer finishes. Each stream keeps at most ``max_bytes`` (the newest); a reader
asking for dropped bytes gets OUT_OF_RANGE. Streams are dropped ``retention``
seconds after they finish (the final output is in the ActionResult), and unfinished
ones after ``idle_timeout`` without a write.

Names: ``{parent}/logstreams/{id}`` and ``{parent}/logstreams/{id}/write/{token}``
(docs/BOTS_PROTOCOL.md section 6).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from cas.errors import FailedPrecondition, InvalidArgument, NotFound, OutOfRange
from cas.store import READ_CHUNK_SIZE
from server.change_signal import ChangeSignal
from server.scheduler.clock import Clock, IdFactory, SystemClock, random_id

NAME_PATTERN = re.compile(r"^(?:.*/)?logstreams/[0-9a-f]{32}(?P<write>/write/[0-9a-f]{32})?$")
DEFAULT_MAX_BYTES = 16 << 20


class LogStreams(Protocol):
    """What the LogStream and ByteStream services need of a log stream store: this
    process's LogStreamStore, or one in Redis that every replica shares
    (server/scheduler/state/redis/logstreams.py)."""

    def owns(self, resource_name: str) -> bool:
        """Whether a ByteStream resource name is a log stream's (read or write)."""

    async def open(self, parent: str) -> tuple[str, str]:
        """A new stream under ``parent``: (name, write name)."""

    def read(self, name: str, offset: int = 0, limit: int = 0) -> AsyncIterator[bytes]:
        """From ``offset``, following the writer until it finishes."""

    async def write(self, write_name: str, offset: int, data: bytes, finish: bool) -> int:
        """Append at ``offset`` (the committed size); the new committed size."""

    async def status(self, write_name: str) -> tuple[int, bool]:
        """(committed size, finished)."""

    def tick(self) -> None:
        """Time-driven housekeeping."""


class LogStream:
    __slots__ = ("name", "write_name", "data", "base", "finished", "last_activity", "drop_at", "signal")

    def __init__(self, name: str, write_name: str, now: float) -> None:
        self.name = name
        self.write_name = write_name
        self.data = bytearray()
        self.base = 0  # offset of data[0]: bytes before it were dropped
        self.finished = False
        self.last_activity = now
        self.drop_at: float | None = None
        self.signal = ChangeSignal()

    @property
    def committed(self) -> int:
        return self.base + len(self.data)

    def notify(self) -> None:
        self.signal.notify()

    def changed(self) -> asyncio.Future[None]:
        return self.signal.changed()


class LogStreamStore:
    def __init__(
        self,
        max_bytes: int = DEFAULT_MAX_BYTES,
        retention: float = 600.0,
        idle_timeout: float = 3600.0,
        clock: Clock | None = None,
        new_id: IdFactory = random_id,
    ) -> None:
        self.max_bytes = max_bytes
        self.retention = retention
        self.idle_timeout = idle_timeout
        self.clock = clock or SystemClock()
        self.new_id = new_id
        self._by_name: dict[str, LogStream] = {}
        self._by_write_name: dict[str, LogStream] = {}

    def __len__(self) -> int:
        return len(self._by_name)

    # -- creating and finishing ----------------------------------------------

    def create(self, parent: str) -> LogStream:
        name = f"{parent}/logstreams/{self.new_id()}" if parent else f"logstreams/{self.new_id()}"
        stream = LogStream(name, f"{name}/write/{self.new_id()}", self.clock.now())
        self._by_name[stream.name] = stream
        self._by_write_name[stream.write_name] = stream
        return stream

    def create_pair(self, parent: str) -> tuple[tuple[str, str], tuple[str, str]]:
        out, err = self.create(f"{parent}/stdout"), self.create(f"{parent}/stderr")
        return (out.name, out.write_name), (err.name, err.write_name)

    def finish(self, write_names: Sequence[str], drop_after: float | None = None) -> None:
        """Close streams (readers see the end) and schedule their drop."""
        now = self.clock.now()
        for write_name in write_names:
            stream = self._by_write_name.get(write_name)
            if stream is not None:
                self._finish(stream, now, drop_after)

    def _finish(self, stream: LogStream, now: float, drop_after: float | None = None) -> None:
        if not stream.finished:
            stream.finished = True
            stream.notify()
        if stream.drop_at is None:
            stream.drop_at = now + (self.retention if drop_after is None else drop_after)

    # -- names -----------------------------------------------------------------

    @staticmethod
    def owns(resource_name: str) -> bool:
        """Whether a ByteStream resource name is a log stream's (read or write)."""
        return NAME_PATTERN.match(resource_name) is not None

    def for_read(self, name: str) -> LogStream:
        match = NAME_PATTERN.match(name)
        if match is None:
            raise InvalidArgument(f"{name!r} is not a log stream name")
        if match.group("write"):
            raise InvalidArgument(f"{name!r} is a log stream's write resource name; read its name without /write/...")
        stream = self._by_name.get(name)
        if stream is None:
            raise NotFound(f"log stream {name!r} is unknown or was dropped after its operation ended")
        return stream

    def for_write(self, write_name: str) -> LogStream:
        match = NAME_PATTERN.match(write_name)
        if match is None or not match.group("write"):
            raise InvalidArgument(f"{write_name!r} is not a log stream write resource name (use LogStream.write_resource_name)")
        stream = self._by_write_name.get(write_name)
        if stream is None:
            raise NotFound(f"log stream write name {write_name!r} is unknown or was dropped")
        return stream

    # -- writing and reading -----------------------------------------------

    def append(self, stream: LogStream, offset: int, data: bytes, finish: bool = False) -> int:
        """Append at ``offset`` (must equal the committed size); return the new size."""
        if offset != stream.committed:
            raise InvalidArgument(
                f"log stream write_offset {offset} does not match the {stream.committed} bytes already written"
            )
        if stream.finished and (data or not finish):
            raise FailedPrecondition(f"log stream {stream.name!r} is already finished")
        now = self.clock.now()
        if data:
            stream.data += data
            excess = len(stream.data) - self.max_bytes
            if excess > 0:
                del stream.data[:excess]
                stream.base += excess
            stream.last_activity = now
            stream.notify()
        if finish:
            self._finish(stream, now)
        return stream.committed

    async def read(self, name: str, offset: int = 0, limit: int = 0) -> AsyncIterator[bytes]:
        """Stream from ``offset``, following the writer until it finishes."""
        stream = self.for_read(name)
        if offset < 0 or limit < 0:
            raise OutOfRange(f"read offset {offset} and limit {limit} must not be negative")
        end = offset + limit if limit else None
        position = offset
        while end is None or position < end:
            if position < stream.base:
                raise OutOfRange(
                    f"log stream {name!r} dropped its first {stream.base} bytes (it keeps the newest "
                    f"{self.max_bytes}); read from offset {stream.base} or later"
                )
            available = stream.committed if end is None else min(stream.committed, end)
            if position < available:
                start = position - stream.base
                stop = min(available - stream.base, start + READ_CHUNK_SIZE)
                chunk = bytes(stream.data[start:stop])
                position += len(chunk)
                yield chunk
                continue
            if stream.finished:
                if position > stream.committed:
                    raise OutOfRange(f"read offset {offset} is past the end of log stream {name!r} ({stream.committed} bytes)")
                return
            await stream.changed()

    def query(self, write_name: str) -> tuple[int, bool]:
        stream = self.for_write(write_name)
        return stream.committed, stream.finished

    # -- the LogStreams protocol (what the services call) --------------------------

    async def open(self, parent: str) -> tuple[str, str]:
        stream = self.create(parent)
        return stream.name, stream.write_name

    async def write(self, write_name: str, offset: int, data: bytes, finish: bool) -> int:
        return self.append(self.for_write(write_name), offset, data, finish)

    async def status(self, write_name: str) -> tuple[int, bool]:
        return self.query(write_name)

    # -- housekeeping ----------------------------------------------------------

    def tick(self) -> None:
        now = self.clock.now()
        for stream in list(self._by_name.values()):
            if not stream.finished and now - stream.last_activity > self.idle_timeout:
                self._finish(stream, now, drop_after=0.0)
            if stream.drop_at is not None and stream.drop_at <= now:
                del self._by_name[stream.name]
                del self._by_write_name[stream.write_name]
                stream.notify()
