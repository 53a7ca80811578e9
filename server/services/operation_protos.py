"""OperationState -> google.longrunning.Operation, shared by Execution and Operations.

Per REv2, ``Operation.error`` is never set: an execution's failure is data in
``ExecuteResponse.status``, inside ``response``.
"""

from __future__ import annotations

from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.google.longrunning import operations_pb2 as lro_pb2
from server.scheduler.operation import OperationState, Stage


def operation_proto(state: OperationState) -> lro_pb2.Operation:
    metadata = re_pb2.ExecuteOperationMetadata(
        stage=int(state.stage),  # type: ignore[arg-type]
        action_digest=state.action_digest.to_proto(),
        stdout_stream_name=state.stdout_name,
        stderr_stream_name=state.stderr_name,
        digest_function=state.action_digest.function,  # type: ignore[arg-type]
    )
    if state.partial_metadata is not None:
        metadata.partial_execution_metadata.CopyFrom(state.partial_metadata)
    operation = lro_pb2.Operation(name=state.name, done=state.done)
    operation.metadata.Pack(metadata)
    if state.done and state.response is not None:
        operation.response.Pack(state.response)
    return operation


def early_operation_proto(
    name: str, action_digest: Digest, stage: Stage, response: re_pb2.ExecuteResponse | None = None
) -> lro_pb2.Operation:
    """An operation the scheduler has not seen: the CACHE_CHECK message, or a cache hit."""
    metadata = re_pb2.ExecuteOperationMetadata(
        stage=int(stage),  # type: ignore[arg-type]
        action_digest=action_digest.to_proto(),
        digest_function=action_digest.function,  # type: ignore[arg-type]
    )
    operation = lro_pb2.Operation(name=name, done=response is not None)
    operation.metadata.Pack(metadata)
    if response is not None:
        operation.response.Pack(response)
    return operation
