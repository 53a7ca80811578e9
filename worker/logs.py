"""Live stdout/stderr: tail the files the command writes into the server's LogStreams.

The runner sends the command's output to files (no pipes to keep drained), and a
``LogTail`` per stream polls its file every ``interval`` (100 ms by default) and
appends what is new to the LogStream's write resource over one open
ByteStream.Write call, so a client reading the stream sees lines while the action
runs. Nothing is sent for a stream that stays empty. ``finish`` flushes the rest and
closes the stream before the lease is reported (the server closes streams still
open at completion, so late bytes would be refused).

Live logs are a convenience: the full output is always in the ActionResult. A
failing LogStream is logged once and dropped, never failing the action.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import grpc

from cas.store import READ_CHUNK_SIZE
from remote_apis_protos.google.bytestream import bytestream_pb2 as bs_pb2
from remote_apis_protos.google.bytestream import bytestream_pb2_grpc as bs_grpc

log = logging.getLogger("reapi.worker.logs")

DEFAULT_INTERVAL = 0.1


class LogTail:
    """Follows one file into one LogStream write resource."""

    def __init__(self, bytestream: bs_grpc.ByteStreamStub, write_name: str, path: Path,
                 interval: float = DEFAULT_INTERVAL) -> None:
        self.bytestream = bytestream
        self.write_name = write_name
        self.path = path
        self.interval = interval
        self.sent = 0
        self._call: grpc.aio.StreamUnaryCall | None = None
        self._failed = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._fd = -1

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name=f"log tail {self.path.name}")

    async def finish(self) -> None:
        """Send the remaining bytes and close the stream (finish_write).

        The follower is asked to stop and awaited, never cancelled: cancelling it
        inside ``await call.write(...)`` makes grpc cancel the whole call, which lost
        the stream's tail (and, on the first message, its resource name)."""
        self._stopping.set()
        if self._task is not None:
            await self._task
        try:
            await self._send_new()
            if self._call is not None and not self._failed:
                await self._call.write(bs_pb2.WriteRequest(write_offset=self.sent, finish_write=True))
                await self._call.done_writing()
                await self._call
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
            self._fail(exc)
        finally:
            self.close()

    def close(self) -> None:
        """Abandon the stream (cancellation); the server closes it with the lease.
        Only here is the follower cancelled: the call is being given up anyway."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._call is not None and not self._call.done() and self._failed:
            self._call.cancel()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    async def _follow(self) -> None:
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), self.interval)
                return  # finish() sends the rest
            except TimeoutError:
                pass
            try:
                await self._send_new()
            except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
                self._fail(exc)
                return

    async def _send_new(self) -> None:
        if self._failed:
            return
        if self._fd < 0:
            try:
                self._fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                return
        while chunk := os.pread(self._fd, READ_CHUNK_SIZE, self.sent):
            if self._call is None:
                self._call = self.bytestream.Write()
                request = bs_pb2.WriteRequest(resource_name=self.write_name, write_offset=0, data=chunk)
            else:
                request = bs_pb2.WriteRequest(write_offset=self.sent, data=chunk)
            await self._call.write(request)
            self.sent += len(chunk)

    def _fail(self, exc: BaseException) -> None:
        if not self._failed:
            detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else repr(exc)
            log.warning("live log %s stopped after %d bytes: %s", self.write_name, self.sent, detail)
        self._failed = True
