"""TempFileWriter: a streamed value on its way into a temp file, a buffer per thread hop.

Chunks are gathered into buffers of ``buffer_size`` bytes (a ByteStream upload
arrives in chunks as small as 16 KiB; a thread hop per chunk would cost more than
the copy). Each full buffer is written in a thread while the next one fills, so
the disk and the network overlap. The temp file is created only when the first
buffer is full: a small value never touches it, and the caller stores it in one
hop instead.

Whatever happens to the stream, ``discard`` removes the temp file, after waiting
for any thread call still using it: closing a descriptor that a thread is writing
to could let the number be reused for another file meanwhile.
"""

from __future__ import annotations

import asyncio
from typing import Any

from cas.localfs import files as disk_files
from cas.localfs.io_lane import IoLane


class TempFileWriter:
    def __init__(self, lane: IoLane, tmp_path: str, buffer_size: int) -> None:
        self.tmp_path = tmp_path
        self.fd = -1
        self._lane = lane
        self._buffer_size = buffer_size
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._pending: asyncio.Future[Any] | None = None  # the thread call using the file
        self._file_started = False
        self._handed_off = False

    @property
    def file_started(self) -> bool:
        """Whether the temp file exists (or is being created)."""
        return self._file_started

    async def add(self, chunk: bytes) -> None:
        self._buffer.append(chunk)
        self._buffered += len(chunk)
        if self._buffered < self._buffer_size:
            return
        await self._settle()
        if self.fd < 0:
            self._file_started = True
            self._pending = await self._lane.started(disk_files.create_temp, self.tmp_path)
            self.fd = await asyncio.shield(self._pending)
            self._pending = None
        # Not awaited here: the write overlaps with receiving the next chunks.
        self._pending = await self._lane.started(disk_files.write_all, self.fd, self._buffer)
        self._buffer, self._buffered = [], 0

    def whole_value(self) -> bytes:
        """The value, for one that never filled a buffer (no temp file was made)."""
        assert not self._file_started
        return b"".join(self._buffer)

    async def hand_off(self) -> tuple[int, list[bytes]]:
        """Wait for the last buffer write; the caller then owns the descriptor and the
        temp file, and gets the buffers not yet written."""
        await self._settle()
        self._handed_off = True
        return self.fd, self._buffer

    async def discard(self) -> None:
        """Remove the temp file unless it was handed off. Run it shielded."""
        if not self._file_started or self._handed_off:
            return
        pending = self._pending
        if pending is not None:
            await asyncio.wait([pending])
            if self.fd < 0 and not pending.cancelled() and pending.exception() is None:
                self.fd = pending.result()  # its creation finished after the writer was cancelled
        self._handed_off = True
        await self._lane.start(disk_files.discard, self.fd, self.tmp_path)

    async def _settle(self) -> None:
        if self._pending is not None:
            await asyncio.shield(self._pending)
            self._pending = None
