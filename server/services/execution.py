"""Execution service: Execute and WaitExecution, translated to scheduler calls.

Execute answers a complete action cache hit right away (stages CACHE_CHECK and
COMPLETED), else validates the action (FAILED_PRECONDITION listing every missing
blob, INVALID_ARGUMENT for malformed trees) before it names an operation: the first
Operation (CACHE_CHECK, with the stable name the client may later pass to
WaitExecution or GetOperation) names one the scheduler knows. Then it streams every
stage change of the scheduled execution, repeating the current state at least every
``progress_interval`` so clients with deadlines stay alive.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc

from cas.digest import Digest
from cas.errors import ReapiError
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from remote_apis_protos.google.longrunning import operations_pb2 as lro_pb2
from server import boundary
from server.explain.history import ActionHistory, producer_keys
from server.auth.caller import caller_principal
from server.instances import Instance, InstanceRegistry
from server.metrics.families import ServerMetrics
from server.request_metadata import describe_client, request_metadata
from server.scheduler.interface import ResultCache, Scheduler
from server.scheduler.operation import Stage
from server.scheduler.validation import ActionPreparer
from server.services.operation_protos import early_operation_proto, operation_proto


@dataclass(frozen=True)
class PriorityRange:
    """The ExecutionPolicy.priority values Capabilities advertises; others are clamped."""

    lowest: int = -1000  # runs first
    highest: int = 1000

    def clamp(self, priority: int) -> int:
        return max(self.lowest, min(self.highest, priority))


class ExecutionService(re_grpc.ExecutionServicer):
    def __init__(
        self,
        instances: InstanceRegistry,
        scheduler: Scheduler,
        preparer: ActionPreparer,
        results: ResultCache,
        priorities: PriorityRange = PriorityRange(),
        metrics: ServerMetrics | None = None,
        history: ActionHistory | None = None,
    ) -> None:
        self.instances = instances
        self.scheduler = scheduler
        self.preparer = preparer
        self.results = results
        self.priorities = priorities
        self.metrics = metrics
        self.history = history

    @boundary.streaming
    async def Execute(
        self, request: re_pb2.ExecuteRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[lro_pb2.Operation]:
        instance = self.instances.get(request.instance_name)
        try:
            action_digest = Digest.from_proto(request.action_digest, request.digest_function)
        except ReapiError as err:
            raise err.with_context("ExecuteRequest.action_digest") from None
        # Checked before a name is handed out: a client never holds the name of an
        # operation that failed validation (GetOperation would not know it).
        result = None
        if not request.skip_cache_lookup:
            result = await self.results.lookup(request.instance_name, action_digest)
            if self.metrics is not None:
                (self.metrics.ac_misses if result is None else self.metrics.ac_hits).inc()
        if result is not None:
            name = self.scheduler.new_operation_name(request.instance_name)
            yield early_operation_proto(name, action_digest, Stage.CACHE_CHECK)
            response = re_pb2.ExecuteResponse(result=result, cached_result=True)
            yield early_operation_proto(name, action_digest, Stage.COMPLETED, response)
            return
        prepared = await self.preparer.prepare(instance.cas, request.instance_name, action_digest)
        name = self.scheduler.new_operation_name(request.instance_name)
        priority = self.priorities.clamp(request.execution_policy.priority)
        await self.scheduler.submit(name, prepared, priority, owner=caller_principal())  # may refuse it: no worker can run it
        yield early_operation_proto(name, action_digest, Stage.CACHE_CHECK)
        if self.history is not None:
            await self._remember(name, request.instance_name, instance, prepared.action_bytes, action_digest, context)
        async for state in self.scheduler.watch(name, replay=True):
            yield operation_proto(state)

    async def _remember(self, name: str, instance_name: str, instance: Instance, action_bytes: bytes,
                        action_digest: Digest, context: grpc.aio.ServicerContext) -> None:
        """Note what this execution produces, for "why did this miss?" (server/explain/)."""
        assert self.history is not None
        action = re_pb2.Action.FromString(action_bytes)
        command_digest = Digest.parse(action.command_digest.hash, action.command_digest.size_bytes,
                                      action_digest.function)
        command = re_pb2.Command.FromString(await instance.cas.get_or_none(command_digest) or b"")
        metadata = request_metadata(context.invocation_metadata())
        keys = producer_keys(instance_name, command, metadata)
        self.history.record(name, action_digest, keys, describe_client(metadata))

    @boundary.streaming
    async def WaitExecution(
        self, request: re_pb2.WaitExecutionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[lro_pb2.Operation]:
        async for state in self.scheduler.watch(request.name):
            yield operation_proto(state)
