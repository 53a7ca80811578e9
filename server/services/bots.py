"""Bots service (Remote Workers API v1test2): sessions and leases, translated for the scheduler.

docs/BOTS_PROTOCOL.md is the contract; this module only converts protos. Each
answer carries, per lease and in lease order, an ``executeoperationmetadata-bin``
(BuildGrid's convention, with the log stream write names and the digest function)
and a ``reapi-instance-name-bin`` entry in its trailing metadata; for a bot that
asked for inline blobs, also ``reapi-inline-blobs`` (the agreed limit, once) and a
``reapi-lease-blobs-bin`` entry per lease (lease_inputs.py); for a bot that offered
cache summaries, ``reapi-cache-summary`` (bot_summaries.py).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError

from cas.bots_protocol_names import (
    CAPACITY_CONFIG, FILES_FORM_KEY, FILES_RUN, HOLD_WHEN_BUSY_CONFIG, INLINE_BLOBS_KEY, INLINE_FILES_KEY,
    INSTANCE_NAME_KEY, LEASE_BLOBS_KEY, LEASE_FILES_KEY, OPERATION_METADATA_KEY, PARTIAL_METADATA_PREFIX,
    SUMMARY_CONFIG,
)
from cas.digest import Digest
from cas.errors import InvalidArgument
from cas.timestamps import timestamp_of
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.google.devtools.remoteworkers.v1test2 import bots_pb2
from remote_apis_protos.google.devtools.remoteworkers.v1test2 import bots_pb2_grpc as bots_grpc
from server import boundary
from server.auth.caller import caller_principal
from server.instances import InstanceRegistry
from server.scheduler.input_cache import InputCache
from server.scheduler.interface import Scheduler
from server.scheduler.platform import PlatformMatcher
from server.scheduler.sessions import BotRegistration, BotSummary, LeaseReport, LeaseView, SessionAnswer
from server.services.bot_summaries import SessionFilters, agreed_limit, summary_of
from server.services.lease_inputs import lease_files, lease_inputs, read_files

log = logging.getLogger("reapi.server.bots")

ACTION_TYPE_URL = "type.googleapis.com/" + re_pb2.Action.DESCRIPTOR.full_name
HEALTHY = (bots_pb2.BotStatus.OK, bots_pb2.BotStatus.BOT_STATUS_UNSPECIFIED)


def registration_of(
    parent: str, session: bots_pb2.BotSession, matcher: PlatformMatcher, inline_cap: int = 0, owner: str = ""
) -> BotRegistration:
    """What the bot offers; ``inline_cap`` is the most inline blob bytes this server allows;
    ``owner`` the principal opening the session."""
    if not session.bot_id:
        raise InvalidArgument("bot_session.bot_id must be set (a stable, unique id of the bot process)")
    worker = session.worker
    properties = [(p.key, p.value) for p in worker.properties]
    if worker.devices:
        properties += [(p.key, p.value) for p in worker.devices[0].properties]
    configs = {c.key: c.value for c in worker.configs}
    try:
        capacity = int(configs.get(CAPACITY_CONFIG, "1"))
    except ValueError:
        raise InvalidArgument(f"worker config capacity={configs[CAPACITY_CONFIG]!r} is not a whole number") from None
    asked = configs.get(INLINE_BLOBS_KEY, "0")
    try:
        inline_limit = int(asked)
    except ValueError:
        inline_limit = -1
    if inline_limit < 0:
        raise InvalidArgument(f"worker config {INLINE_BLOBS_KEY}={asked!r} is not a byte count (a whole number >= 0)")
    return BotRegistration(
        bot_id=session.bot_id,
        instance_name=parent,
        offer=matcher.offer(properties),
        capacity=capacity,
        healthy=session.status in HEALTHY,
        hold_when_busy=configs.get(HOLD_WHEN_BUSY_CONFIG, "").lower() == "true",
        inline_limit=min(inline_limit, inline_cap),
        owner=owner,
    )


def _unpack_result(lease: bots_pb2.Lease) -> re_pb2.ExecuteResponse:
    response = re_pb2.ExecuteResponse()
    result: any_pb2.Any = lease.result
    try:
        if result.Is(re_pb2.ActionResult.DESCRIPTOR):  # type: ignore[arg-type]
            result.Unpack(response.result)
        elif result.Is(re_pb2.ExecuteResponse.DESCRIPTOR):  # type: ignore[arg-type]
            result.Unpack(response)
        elif result.type_url:
            raise InvalidArgument(
                f"lease {lease.id}: result holds {result.type_url}; expected an ActionResult or an ExecuteResponse"
            )
    except DecodeError as exc:
        raise InvalidArgument(f"lease {lease.id}: result does not parse: {exc}") from None
    return response


def reports_of(session: bots_pb2.BotSession) -> list[LeaseReport]:
    reports = []
    for lease in session.leases:
        if lease.state == bots_pb2.LeaseState.COMPLETED:
            status = lease.status if lease.HasField("status") else None
            reports.append(LeaseReport(lease.id, True, status, _unpack_result(lease)))
        else:
            reports.append(LeaseReport(lease.id, False))
    return reports


def partial_metadata_of(context: grpc.aio.ServicerContext) -> dict[str, re_pb2.ExecutedActionMetadata]:
    out = {}
    for key, value in context.invocation_metadata() or ():
        if key.startswith(PARTIAL_METADATA_PREFIX) and key.endswith("-bin"):
            metadata = re_pb2.ExecutedActionMetadata()
            try:
                metadata.ParseFromString(value)
            except DecodeError:
                raise InvalidArgument(f"request metadata {key} is not an ExecutedActionMetadata") from None
            out[key[len(PARTIAL_METADATA_PREFIX) : -len("-bin")]] = metadata
    return out


def lease_proto(view: LeaseView) -> bots_pb2.Lease:
    lease = bots_pb2.Lease(
        id=view.lease_id,
        state=bots_pb2.LeaseState.CANCELLED if view.cancelled else bots_pb2.LeaseState.ACTIVE,
    )
    lease.payload.type_url = ACTION_TYPE_URL
    lease.payload.value = view.action_bytes  # the client's own bytes, never re-serialized
    return lease


def inline_files_limit(session: bots_pb2.BotSession, answer: SessionAnswer, inputs: InputCache | None) -> int | None:
    """The bytes of input files each answer may carry inline, as agreed with a bot that
    asked (``reapi-inline-files``, within the inline blob limit); None: it did not ask."""
    if inputs is None or not answer.inline_limit:
        return None
    for config in session.worker.configs:
        if config.key == INLINE_FILES_KEY:
            try:
                return max(0, min(int(config.value), answer.inline_limit))
            except ValueError:
                return 0
    return None


def files_as_run(session: bots_pb2.BotSession) -> bool:
    """Whether the bot reads its inline files as one run per lease (``reapi-inline-files-form``)."""
    return any(config.key == FILES_FORM_KEY and config.value == FILES_RUN for config in session.worker.configs)


def trailing_metadata(
    answer: SessionAnswer, inputs: InputCache | None = None, known: frozenset[str] | set[str] = frozenset(),
    files: Mapping[str, dict[Digest, bytes]] | None = None, files_limit: int | None = None, run: bool = False,
) -> tuple[tuple[str, str | bytes], ...]:
    """``known``: ids of leases the bot listed in its call; it has their inputs already.
    ``files``: input files read for the leases (by lease id) of a bot that agreed to
    ``files_limit`` bytes of them; ``run``: the bot reads them as one run per lease."""
    entries: list[tuple[str, str | bytes]] = []
    inline = answer.inline_limit if inputs is not None else 0
    run = bool(run and inline and files_limit)  # files are sent, and as a run
    if inline:
        entries.append((INLINE_BLOBS_KEY, str(inline)))
        if files_limit is not None:
            entries.append((INLINE_FILES_KEY, str(files_limit)))
        if run:
            entries.append((FILES_FORM_KEY, FILES_RUN))
    budget = inline  # for the whole answer: it is what the bot's metadata limit was raised by
    for view in answer.leases:
        metadata = re_pb2.ExecuteOperationMetadata(
            stage=re_pb2.ExecutionStage.COMPLETED if view.cancelled else re_pb2.ExecutionStage.EXECUTING,
            action_digest=view.action_digest_proto,
            stdout_stream_name=view.stdout_write_name,
            stderr_stream_name=view.stderr_write_name,
            digest_function=view.digest_function,  # type: ignore[arg-type]
        )
        entries.append((OPERATION_METADATA_KEY, metadata.SerializeToString()))
        entries.append((INSTANCE_NAME_KEY, view.instance_name.encode()))
        if inline:
            assert inputs is not None
            blobs, files_run = (b"", b"") if view.lease_id in known else lease_inputs(
                view, inputs, budget, answer.sent_blobs, files.get(view.lease_id) if files else None, run)
            budget -= len(blobs) + len(files_run)
            entries.append((LEASE_BLOBS_KEY, blobs))
            if run:
                entries.append((LEASE_FILES_KEY, files_run))
    return tuple(entries)


class BotsService(bots_grpc.BotsServicer):
    def __init__(
        self,
        instances: InstanceRegistry,
        scheduler: Scheduler,
        matcher: PlatformMatcher,
        inputs: InputCache | None = None,
        inline_limit: int = 0,
        summary_limit: int = 0,
    ) -> None:
        """``inputs`` and ``inline_limit`` (bytes; 0 = off) let leases carry their
        Command and Directories to bots that ask (docs/BOTS_PROTOCOL.md section 7);
        ``summary_limit`` (bytes; 0 = off) takes the cache summaries bots offer (section 8)."""
        self.instances = instances
        self.scheduler = scheduler
        self.matcher = matcher
        self.inputs = inputs
        self.inline_limit = inline_limit if inputs is not None else 0
        self.summary_limit = summary_limit
        self.filters = SessionFilters()  # what each bot says it holds: files its leases need not carry

    async def _reply(
        self, request_session: bots_pb2.BotSession, answer: SessionAnswer, context: grpc.aio.ServicerContext,
        summary: BotSummary | None = None,
    ) -> bots_pb2.BotSession:
        """``summary``: what the call carried (docs/BOTS_PROTOCOL.md section 8)."""
        reply = bots_pb2.BotSession(
            name=answer.name,
            bot_id=request_session.bot_id,
            status=request_session.status,
            worker=request_session.worker,
            leases=[lease_proto(view) for view in answer.leases],
            expire_time=timestamp_of(answer.expire_time),
            version=request_session.version,
        )
        known = {lease.id for lease in request_session.leases}
        files_limit = inline_files_limit(request_session, answer, self.inputs)
        self.filters.remember(answer.name, summary)
        files = await self._lease_files(answer, known, files_limit) if files_limit else None
        entries = trailing_metadata(answer, self.inputs, known, files, files_limit, files_as_run(request_session))
        if any(config.key == SUMMARY_CONFIG for config in request_session.worker.configs):
            entries += ((SUMMARY_CONFIG, str(agreed_limit(request_session, self.summary_limit))),)
        context.set_trailing_metadata(entries)
        return reply

    async def _lease_files(self, answer: SessionAnswer, known: set[str], limit: int) -> dict[str, dict[Digest, bytes]]:
        """The small input files of the new leases in ``answer``, read from their CAS."""
        assert self.inputs is not None
        out: dict[str, dict[Digest, bytes]] = {}
        held = self.filters.of(answer.name) if answer.leases else None
        for view in answer.leases:
            if view.lease_id in known:
                continue
            wanted = lease_files(view, self.inputs, limit, answer.sent_blobs, held)
            if wanted:
                out[view.lease_id] = await read_files(self.instances.get(view.instance_name).cas, wanted)  # its Execute was served
        return out

    def _summary(self, session: bots_pb2.BotSession, context: grpc.aio.ServicerContext) -> BotSummary | None:
        limit = agreed_limit(session, self.summary_limit)
        return summary_of(session.bot_id, context.invocation_metadata() or (), limit) if limit else None

    @boundary.unary
    async def CreateBotSession(
        self, request: bots_pb2.CreateBotSessionRequest, context: grpc.aio.ServicerContext
    ) -> bots_pb2.BotSession:
        self.instances.get(request.parent)  # INVALID_ARGUMENT for a name this server does not serve
        # The session is its opener's: no other identity may update or replace it (server/auth).
        registration = registration_of(request.parent, request.bot_session, self.matcher, self.inline_limit,
                                       owner=caller_principal())
        summary = self._summary(request.bot_session, context)
        answer = await self.scheduler.create_session(registration, summary)
        log.info("worker %s joined from %s: %d slots, %s (session %s)", registration.bot_id, context.peer(),
                 registration.capacity, registration.offer.describe(), answer.name)
        return await self._reply(request.bot_session, answer, context, summary)

    @boundary.unary
    async def UpdateBotSession(
        self, request: bots_pb2.UpdateBotSessionRequest, context: grpc.aio.ServicerContext
    ) -> bots_pb2.BotSession:
        session = request.bot_session
        if request.name != session.name:
            raise InvalidArgument(
                f"UpdateBotSessionRequest.name {request.name!r} differs from bot_session.name {session.name!r}"
            )
        if session.status == bots_pb2.BotStatus.BOT_TERMINATING and not session.leases:
            # The bot says goodbye: its slots leave the farm now, not when the session expires.
            await self.scheduler.end_session(request.name, session.bot_id, f"bot {session.bot_id} stopped")
            self.filters.forget(request.name)
            return bots_pb2.BotSession(name=request.name, bot_id=session.bot_id, status=session.status)
        summary = self._summary(session, context)
        answer = await self.scheduler.update_session(
            request.name,
            session.bot_id,
            session.status in HEALTHY,
            reports_of(session),
            partial_metadata_of(context),
            context.time_remaining(),
            summary,
        )
        return await self._reply(session, answer, context, summary)
