"""google.longrunning.Operations over the scheduler's operations.

ListOperations understands a small filter language: conditions joined by ``AND``,
each ``stage = NAME``, ``stage != NAME`` (NAME one of CACHE_CHECK, QUEUED,
EXECUTING, COMPLETED, any case) or ``done = true|false``. ``name`` in the request
restricts the list to one instance name when it is not empty.
"""

from __future__ import annotations

import re

import grpc
from google.protobuf import empty_pb2

from cas.errors import InvalidArgument
from cas.timestamps import seconds_of
from remote_apis_protos.google.longrunning import operations_pb2 as lro_pb2
from remote_apis_protos.google.longrunning import operations_pb2_grpc as lro_grpc
from server import boundary
from server.scheduler.interface import OperationFilter, Scheduler
from server.scheduler.operation import Stage
from server.services.operation_protos import operation_proto

DEFAULT_WAIT_SECONDS = 20.0
_CONDITION = re.compile(r"^\s*(\w+)\s*(!=|=)\s*(\w+)\s*$")
_STAGES: dict[str, Stage] = {s.name: s for s in Stage if s is not Stage.UNKNOWN}


def parse_filter(text: str) -> OperationFilter:
    """The OperationFilter for ``text``; INVALID_ARGUMENT naming the bad part."""
    stages: set[Stage] | None = None
    done: bool | None = None
    if not text.strip():
        return OperationFilter()
    for part in re.split(r"\s+AND\s+", text.strip(), flags=re.IGNORECASE):
        match = _CONDITION.match(part)
        if match is None:
            raise InvalidArgument(f"filter condition {part!r} is not 'FIELD = VALUE' or 'FIELD != VALUE'")
        field, op, value = match.group(1).lower(), match.group(2), match.group(3)
        if field == "stage":
            stage = _STAGES.get(value.upper())
            if stage is None:
                raise InvalidArgument(f"filter: unknown stage {value!r} (known: {', '.join(_STAGES)})")
            wanted: set[Stage] = {stage}
            if op == "!=":
                wanted = set(_STAGES.values()) - wanted
            stages = wanted if stages is None else stages & wanted
        elif field == "done":
            if value.lower() not in ("true", "false") or op != "=":
                raise InvalidArgument(f"filter: done takes '= true' or '= false', not {op} {value!r}")
            done = value.lower() == "true"
        else:
            raise InvalidArgument(f"filter: unknown field {field!r} (known: stage, done)")
    return OperationFilter(frozenset(stages) if stages is not None else None, done)


class OperationsService(lro_grpc.OperationsServicer):
    def __init__(self, scheduler: Scheduler, default_wait: float = DEFAULT_WAIT_SECONDS) -> None:
        self.scheduler = scheduler
        self.default_wait = default_wait

    @boundary.unary
    async def GetOperation(self, request: lro_pb2.GetOperationRequest, context: grpc.aio.ServicerContext) -> lro_pb2.Operation:
        return operation_proto(await self.scheduler.get(request.name))

    @boundary.unary
    async def ListOperations(
        self, request: lro_pb2.ListOperationsRequest, context: grpc.aio.ServicerContext
    ) -> lro_pb2.ListOperationsResponse:
        states, token = await self.scheduler.list_operations(
            request.name or None, parse_filter(request.filter), request.page_size, request.page_token
        )
        return lro_pb2.ListOperationsResponse(operations=[operation_proto(s) for s in states], next_page_token=token)

    @boundary.unary
    async def CancelOperation(
        self, request: lro_pb2.CancelOperationRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self.scheduler.cancel(request.name)
        return empty_pb2.Empty()

    @boundary.unary
    async def DeleteOperation(
        self, request: lro_pb2.DeleteOperationRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self.scheduler.delete(request.name)
        return empty_pb2.Empty()

    @boundary.unary
    async def WaitOperation(self, request: lro_pb2.WaitOperationRequest, context: grpc.aio.ServicerContext) -> lro_pb2.Operation:
        timeout = self.default_wait
        if request.HasField("timeout"):
            timeout = seconds_of(request.timeout)
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = min(timeout, max(0.0, remaining * 0.9))
        return operation_proto(await self.scheduler.wait(request.name, timeout))
