"""A bot that speaks docs/BOTS_PROTOCOL.md over real gRPC: the reference client.

Tests drive it step by step (``poll``, ``complete``, stop calling to "die"); the
benchmarks run it in a loop (``serve_forever``) with a handler that finishes
actions at once. It reads the trailing metadata exactly as a real bot must.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import grpc
from google.rpc import code_pb2, status_pb2

from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.google.bytestream import bytestream_pb2 as bs_pb2
from remote_apis_protos.google.bytestream import bytestream_pb2_grpc as bs_grpc
from remote_apis_protos.google.devtools.remoteworkers.v1test2 import bots_pb2
from remote_apis_protos.google.devtools.remoteworkers.v1test2 import bots_pb2_grpc as bots_grpc
from remote_apis_protos.google.devtools.remoteworkers.v1test2 import worker_pb2
from tests.support.processes import PATIENCE_S

# A call with under 1 s left is never held (docs/BOTS_PROTOCOL.md section 2): this
# deadline asks for an answer at once, with what margin under that second there is.
QUICK_CALL_DEADLINE_S = 0.9

ACTIVE = bots_pb2.LeaseState.ACTIVE
CANCELLED = bots_pb2.LeaseState.CANCELLED
COMPLETED = bots_pb2.LeaseState.COMPLETED


@dataclass
class ReceivedLease:
    """A lease as the bot understood it from the answer and its trailing metadata."""

    id: str
    action: re_pb2.Action
    metadata: re_pb2.ExecuteOperationMetadata
    instance_name: str
    cancelled: bool = False
    completed: bots_pb2.Lease | None = None  # the report, while not yet acknowledged
    # Blobs the lease carried inline (bots that asked for them), by (hash, size).
    inline_blobs: dict[tuple[str, int], bytes] = field(default_factory=dict)

    @property
    def action_digest(self) -> re_pb2.Digest:
        return self.metadata.action_digest


Handler = Callable[[ReceivedLease], Awaitable[tuple[re_pb2.ActionResult, status_pb2.Status]]]


async def instant_success(lease: ReceivedLease) -> tuple[re_pb2.ActionResult, status_pb2.Status]:
    return re_pb2.ActionResult(exit_code=0, stdout_raw=b""), status_pb2.Status(code=code_pb2.OK)


@dataclass
class TestBot:
    channel: grpc.aio.Channel
    bot_id: str
    instance_name: str = ""
    properties: Iterable[tuple[str, str]] = ()
    capacity: int = 1
    hold_when_busy: bool = False
    status: int = bots_pb2.BotStatus.OK
    inline_limit: int = 0  # ask for inline blobs (docs/BOTS_PROTOCOL.md section 7)
    inline_files: int = 0  # and for this many bytes of small input files among them (section 7)
    summary_size: int = 0  # offer cache summaries of this many bytes (section 8)
    cache: bytes | None = None  # the cache summary every call carries (a DigestFilter's wire form)
    load: str = ""  # the reapi-bot-load every call carries
    name: str = ""
    inline_agreed: int = 0  # what the last answer's reapi-inline-blobs said
    files_agreed: int | None = None  # what the last answer's reapi-inline-files said (None: nothing)
    summary_agreed: int | None = None  # what the last answer's reapi-cache-summary said
    last_trailing: list[tuple[str, str | bytes]] = field(default_factory=list)
    leases: dict[str, ReceivedLease] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)  # every lease id ever received, in order
    cancelled: list[str] = field(default_factory=list)  # ids the server cancelled or took away

    __test__ = False  # not a pytest class

    def __post_init__(self) -> None:
        self.stub = bots_grpc.BotsStub(self.channel)

    def _session(self) -> bots_pb2.BotSession:
        worker = worker_pb2.Worker(
            properties=[worker_pb2.Worker.Property(key=k, value=v) for k, v in self.properties],
            configs=[worker_pb2.Worker.Config(key="capacity", value=str(self.capacity))],
        )
        if self.hold_when_busy:
            worker.configs.add(key="reapi-hold-when-busy", value="true")
        if self.inline_limit:
            worker.configs.add(key="reapi-inline-blobs", value=str(self.inline_limit))
        if self.inline_files:
            worker.configs.add(key="reapi-inline-files", value=str(self.inline_files))
        if self.summary_size:
            worker.configs.add(key="reapi-cache-summary", value=str(self.summary_size))
        session = bots_pb2.BotSession(name=self.name, bot_id=self.bot_id, status=self.status, worker=worker)  # type: ignore[arg-type]
        for lease in self.leases.values():
            if lease.completed is not None:
                session.leases.append(lease.completed)
            else:
                session.leases.add(id=lease.id, state=ACTIVE)
        return session

    def _summary_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        entries: list[tuple[str, str | bytes]] = []
        if self.cache is not None:
            entries.append(("reapi-cache-summary-bin", self.cache))
        if self.load:
            entries.append(("reapi-bot-load", self.load))
        return tuple(entries)

    async def create(self) -> list[ReceivedLease]:
        call = self.stub.CreateBotSession(
            bots_pb2.CreateBotSessionRequest(parent=self.instance_name, bot_session=self._session()),
            metadata=self._summary_metadata() or None,
        )
        answer = await call
        self.name = answer.name
        return self._absorb(answer, await call.trailing_metadata())

    async def poll(self, timeout: float | None = None, metadata: tuple[tuple[str, bytes], ...] = ()) -> list[ReceivedLease]:
        """One UpdateBotSession with every lease the bot holds; returns the new leases."""
        call = self.stub.UpdateBotSession(
            bots_pb2.UpdateBotSessionRequest(name=self.name, bot_session=self._session()),
            timeout=timeout,
            metadata=(tuple(metadata) + self._summary_metadata()) or None,
        )
        answer = await call
        return self._absorb(answer, await call.trailing_metadata())

    async def quick_poll(self, metadata: tuple[tuple[str, bytes], ...] = ()) -> list[ReceivedLease]:
        """One call the server answers at once, never holds: to report, or to look
        without waiting. Its deadline is under the second below which the server holds
        no call (docs/BOTS_PROTOCOL.md section 2), so on a slow or loaded machine the
        answer may miss it. Then the call is sent again, as a real bot would: a lost
        answer loses nothing (the next answer carries every lease again, and a report
        the server took already is ignored), so only a server that never answers fails."""
        return await self.resent_poll(QUICK_CALL_DEADLINE_S, metadata)

    async def resent_poll(self, timeout: float, metadata: tuple[tuple[str, bytes], ...] = ()) -> list[ReceivedLease]:
        """``poll(timeout)``, sent again while it misses its deadline (for up to a minute):
        the server holds a call for 80% of its time left, so on a loaded machine the
        answer may come after the deadline; nothing is lost (see quick_poll)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + PATIENCE_S  # only a server that never answers comes near it
        while True:
            try:
                return await self.poll(timeout=timeout, metadata=metadata)
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.DEADLINE_EXCEEDED or loop.time() > give_up:
                    raise

    def _absorb(self, answer: bots_pb2.BotSession, trailing: grpc.aio.Metadata | None) -> list[ReceivedLease]:
        items = list(trailing or ())
        self.last_trailing = items
        metadata = [v for k, v in items if k == "executeoperationmetadata-bin"]
        instances = [v for k, v in items if k == "reapi-instance-name-bin"]
        assert len(metadata) == len(answer.leases) == len(instances), "one metadata entry per lease, in order"
        agreed = [v for k, v in items if k == "reapi-inline-blobs"]
        self.inline_agreed = int(agreed[0]) if agreed else 0
        files = [v for k, v in items if k == "reapi-inline-files"]
        self.files_agreed = int(files[0]) if files else None
        summary = [v for k, v in items if k == "reapi-cache-summary"]
        self.summary_agreed = int(summary[0]) if summary else None
        lease_blobs = [v for k, v in items if k == "reapi-lease-blobs-bin"]
        assert len(lease_blobs) == (len(answer.leases) if self.inline_agreed else 0), "one blobs entry per lease"
        listed = set()
        new = []
        for i, (lease, raw_meta, raw_instance) in enumerate(zip(answer.leases, metadata, instances)):
            listed.add(lease.id)
            if lease.state == CANCELLED:
                if lease.id in self.leases:
                    del self.leases[lease.id]
                    self.cancelled.append(lease.id)
                continue
            if lease.id in self.leases:
                continue
            action = re_pb2.Action()
            assert lease.payload.Unpack(action), f"payload is {lease.payload.type_url}, not an Action"
            meta = re_pb2.ExecuteOperationMetadata.FromString(raw_meta)
            received = ReceivedLease(lease.id, action, meta, raw_instance.decode())
            if lease_blobs:
                blobs = re_pb2.BatchReadBlobsResponse.FromString(lease_blobs[i])
                received.inline_blobs = {(b.digest.hash, b.digest.size_bytes): b.data for b in blobs.responses}
            self.leases[lease.id] = received
            self.seen.append(lease.id)
            new.append(received)
        for lease_id in list(self.leases):
            if lease_id not in listed:  # acknowledged completion, or taken away
                if self.leases[lease_id].completed is None:
                    self.cancelled.append(lease_id)
                del self.leases[lease_id]
        return new

    def complete(
        self,
        lease_id: str,
        result: re_pb2.ActionResult | re_pb2.ExecuteResponse | None = None,
        status: status_pb2.Status | None = None,
    ) -> None:
        """Mark a lease finished; the next poll reports it."""
        report = bots_pb2.Lease(id=lease_id, state=COMPLETED, status=status or status_pb2.Status(code=code_pb2.OK))
        report.result.Pack(result if result is not None else re_pb2.ActionResult(exit_code=0))
        self.leases[lease_id].completed = report

    async def write_log(self, write_name: str, chunks: Iterable[bytes], finish: bool = True) -> int:
        """Write to a log stream as the bot would (ByteStream.Write on the write name)."""
        stub = bs_grpc.ByteStreamStub(self.channel)
        offset = 0
        requests = []
        for chunk in chunks:
            requests.append(bs_pb2.WriteRequest(resource_name=write_name, write_offset=offset, data=chunk))
            offset += len(chunk)
        requests.append(bs_pb2.WriteRequest(resource_name=write_name, write_offset=offset, finish_write=finish))
        response = await stub.Write(iter(requests))
        return response.committed_size

    async def serve_forever(self, handler: Handler = instant_success, call_timeout: float | None = None) -> None:
        """Run leases as they come: report each completion in the same call that asks for more."""
        if not self.name:
            await self.create()
        while True:
            for lease in [le for le in self.leases.values() if le.completed is None]:
                result, status = await handler(lease)
                self.complete(lease.id, result, status)
            await self.poll(timeout=call_timeout)


async def start_bots(bots: Iterable[TestBot], handler: Handler = instant_success) -> list[asyncio.Task[None]]:
    tasks = []
    for bot in bots:
        await bot.create()
        tasks.append(asyncio.create_task(bot.serve_forever(handler)))
    return tasks
