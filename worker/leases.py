"""Reading leases from the server, and the worker's own record of each one it holds.

Per docs/BOTS_PROTOCOL.md: the payload is the REv2 Action; the trailing metadata of
each Bots answer carries, per lease and in lease order, an ExecuteOperationMetadata
(digest function, action digest, LogStream write names), the instance name the
action was submitted under and, when the server agreed to inline blobs (section 7),
some of the lease's Command and input Directories. Servers that send less (BuildGrid
sends no instance name) still work: the function is then inferred from the hash
length, the worker's own instance name is used, and every input is read from the CAS.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import repeat
from operator import attrgetter

from google.protobuf.message import DecodeError

from cas.blob_run import decode_run
from cas.bots_protocol_names import (
    FILES_FORM_KEY, FILES_RUN, INLINE_BLOBS_KEY, INSTANCE_NAME_KEY, LEASE_BLOBS_KEY, LEASE_FILES_KEY,
    OPERATION_METADATA_KEY, SUMMARY_CONFIG,
)
from cas.digest import Digest, infer_algorithm
from cas.errors import InvalidArgument, ReapiError
from cas.remote.batch_reads import SIZE_BYTES
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.google.devtools.remoteworkers.v1test2 import bots_pb2
from worker.executors import Task

_DIGEST = attrgetter("digest")
_HASH = attrgetter("hash")
_DATA = attrgetter("data")
_MAKE_DIGEST = partial(tuple.__new__, Digest)  # a Digest from (hash, size, function), unchecked



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


def inline_limit_of(trailing: Sequence[tuple[str, str | bytes]] | None) -> int:
    """The inline blob bytes the server agreed to in this answer (0: none)."""
    for value in metadata_values(trailing, INLINE_BLOBS_KEY):
        try:
            return max(0, int(value))
        except ValueError:
            return 0
    return 0


def summary_limit_of(trailing: Sequence[tuple[str, str | bytes]] | None) -> int:
    """The cache summary bytes the server agreed to take in this answer (0: none)."""
    for value in metadata_values(trailing, SUMMARY_CONFIG):
        try:
            return max(0, int(value))
        except ValueError:
            return 0
    return 0


def inline_blobs_of(raw: bytes, function: int) -> dict[Digest, bytes]:
    """The blobs of a ``reapi-lease-blobs-bin`` entry (a BatchReadBlobsResponse).

    Unverified: each is checked against its digest where it is used. A malformed
    entry is ignored (the worker then reads everything from the CAS)."""
    if not raw:
        return {}
    response = re_pb2.BatchReadBlobsResponse()
    try:
        response.ParseFromString(raw)
    except DecodeError:
        return {}
    # Read in C-level passes (a lease may carry a thousand small input files). Unchecked
    # here: a malformed hash is a key no input's digest looks up, and an entry with a
    # status or a compressor does not match its digest where it is used (then read from
    # the CAS), as any blob the server sent wrong.
    items = list(response.responses)
    digests = list(map(_DIGEST, items))
    return dict(zip(map(_MAKE_DIGEST, zip(map(_HASH, digests), map(SIZE_BYTES, digests), repeat(function))),
                    map(_DATA, items)))


def _with_run(blobs: dict[Digest, bytes], run: bytes, function: int) -> dict[Digest, bytes]:
    """``blobs`` and the blobs of ``run`` (unverified, as every inline blob)."""
    if not run:
        return blobs
    files = decode_run(run, function)
    if blobs:
        files.update(blobs)
    return files


def task_for(
    lease: bots_pb2.Lease,
    meta: re_pb2.ExecuteOperationMetadata | None,
    instance_name: str,
    inline_blobs: bytes = b"",
    inline_limit: int = 0,
    inline_files: bytes = b"",
) -> Task:
    """The Task for one lease; INVALID_ARGUMENT when its payload is not an Action.

    ``inline_blobs`` is the lease's ``reapi-lease-blobs-bin`` entry, ``inline_files``
    its ``reapi-lease-files-bin`` (a run of files); ``inline_limit`` the bytes of
    outputs its report may carry inline (what the server agreed to)."""
    action = re_pb2.Action()
    is_action = lease.payload.Is(re_pb2.Action.DESCRIPTOR)  # type: ignore[arg-type]
    try:
        unpacked = is_action and lease.payload.Unpack(action)
    except DecodeError as err:  # the server's fault, told in this lease's result
        raise InvalidArgument(f"lease {lease.id}: payload is not a well-formed REv2 Action ({err})") from err
    if not unpacked:
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
        inline_blobs=_with_run(inline_blobs_of(inline_blobs, function), inline_files, function),
        inline_limit=inline_limit,
    )


def lease_context(
    session: bots_pb2.BotSession,
    trailing: Sequence[tuple[str, str | bytes]] | None,
    default_instance: str,
) -> list[tuple[bots_pb2.Lease, re_pb2.ExecuteOperationMetadata | None, str, bytes, bytes]]:
    """Each lease of an answer with its operation metadata, instance name, inline blobs
    and inline files (a run: empty unless the answer says ``reapi-inline-files-form`` = run)."""
    metas = metadata_values(trailing, OPERATION_METADATA_KEY)
    names = metadata_values(trailing, INSTANCE_NAME_KEY)
    blobs = metadata_values(trailing, LEASE_BLOBS_KEY)
    runs = metadata_values(trailing, LEASE_FILES_KEY) if FILES_RUN in metadata_values(trailing, FILES_FORM_KEY) else []
    aligned_metas = len(metas) == len(session.leases)
    aligned_names = len(names) == len(session.leases)
    aligned_blobs = len(blobs) == len(session.leases)
    aligned_runs = len(runs) == len(session.leases)
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
        inline = blobs[i] if aligned_blobs else b""
        run = runs[i] if aligned_runs else b""
        out.append((lease, meta, name, inline if isinstance(inline, bytes) else inline.encode(),
                    run if isinstance(run, bytes) else run.encode()))
    return out
