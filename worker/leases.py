"""Reading leases from the server, and the worker's own record of each one it holds.

Per docs/BOTS_PROTOCOL.md: the payload is the REv2 Action; the trailing metadata of
each Bots answer carries, per lease and in lease order, an ExecuteOperationMetadata
(digest function, action digest, LogStream write names) and the instance name the
action was submitted under. Servers that send less (BuildGrid sends no instance
name) still work: the function is then inferred from the hash length and the
worker's own instance name is used.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from cas.digest import Digest, infer_algorithm
from cas.errors import InvalidArgument, ReapiError
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.google.devtools.remoteworkers.v1test2 import bots_pb2
from worker.executors import Task

OPERATION_METADATA_KEY = "executeoperationmetadata-bin"
INSTANCE_NAME_KEY = "reapi-instance-name-bin"


@dataclass
class HeldLease:
    """A lease this worker accepted: running, or finished and awaiting acknowledgement."""

    lease_id: str
    task: Task | None
    runner: asyncio.Task[None] | None = None
    completed: bool = False
    result: re_pb2.ActionResult = field(default_factory=re_pb2.ActionResult)
    status_code: int = 0
    status_message: str = ""
    status_details: list = field(default_factory=list)

    def to_proto(self) -> bots_pb2.Lease:
        """The lease as the worker reports it in every UpdateBotSession."""
        if not self.completed:
            return bots_pb2.Lease(id=self.lease_id, state=bots_pb2.LeaseState.ACTIVE)
        lease = bots_pb2.Lease(id=self.lease_id, state=bots_pb2.LeaseState.COMPLETED)
        lease.result.Pack(self.result)
        lease.status.code = self.status_code
        lease.status.message = self.status_message
        lease.status.details.extend(self.status_details)
        return lease

    def complete(self, response: re_pb2.ExecuteResponse) -> None:
        self.completed = True
        self.result.CopyFrom(response.result)
        self.status_code = response.status.code
        self.status_message = response.status.message
        self.status_details = list(response.status.details)


def metadata_values(metadata: Sequence[tuple[str, str | bytes]] | None, key: str) -> list[str | bytes]:
    return [value for k, value in (metadata or ()) if k == key]


def _function_of(action: re_pb2.Action, meta: re_pb2.ExecuteOperationMetadata | None) -> int:
    if meta is not None and meta.digest_function:
        return meta.digest_function
    return infer_algorithm(action.command_digest.hash).function


def task_for(
    lease: bots_pb2.Lease,
    meta: re_pb2.ExecuteOperationMetadata | None,
    instance_name: str,
) -> Task:
    """The Task for one lease; INVALID_ARGUMENT when its payload is not an Action."""
    action = re_pb2.Action()
    is_action = lease.payload.Is(re_pb2.Action.DESCRIPTOR)  # type: ignore[arg-type]
    if not is_action or not lease.payload.Unpack(action):
        raise InvalidArgument(f"lease {lease.id}: payload is {lease.payload.type_url or 'empty'}, not an REv2 Action")
    function = _function_of(action, meta)
    action_digest = None
    if meta is not None and meta.HasField("action_digest"):
        try:
            action_digest = Digest.from_proto(meta.action_digest, function)
        except ReapiError:
            action_digest = None
    return Task(
        lease_id=lease.id,
        action=action,
        action_digest=action_digest,
        instance_name=instance_name,
        digest_function=function,
        stdout_stream=meta.stdout_stream_name if meta is not None else "",
        stderr_stream=meta.stderr_stream_name if meta is not None else "",
    )


def lease_context(
    session: bots_pb2.BotSession,
    trailing: Sequence[tuple[str, str | bytes]] | None,
    default_instance: str,
) -> list[tuple[bots_pb2.Lease, re_pb2.ExecuteOperationMetadata | None, str]]:
    """Each lease of an answer with its operation metadata and instance name."""
    metas = metadata_values(trailing, OPERATION_METADATA_KEY)
    names = metadata_values(trailing, INSTANCE_NAME_KEY)
    aligned_metas = len(metas) == len(session.leases)
    aligned_names = len(names) == len(session.leases)
    out = []
    for i, lease in enumerate(session.leases):
        meta = None
        if aligned_metas:
            meta = re_pb2.ExecuteOperationMetadata()
            raw = metas[i]
            meta.ParseFromString(raw if isinstance(raw, bytes) else raw.encode())
        name = default_instance
        if aligned_names:
            raw = names[i]
            name = raw.decode() if isinstance(raw, bytes) else raw
        out.append((lease, meta, name))
    return out
