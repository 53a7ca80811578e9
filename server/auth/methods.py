"""For every RPC method: the permissions that allow it and where its instance name is.

The one table the authorizer consults. A method listed with several permissions
needs any one of them (a worker reads and writes the CAS under ``worker``; an
uploader asks FindMissingBlobs under ``write``). Methods that address an operation
or a bot session by name also name what they act on, so that the authorizer can
check that it is the caller's own (``admin`` may act on everyone's operations).
A method missing from the table is refused, never allowed.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server.auth.permissions import Permission
from server.resource_names import RESERVED_SEGMENTS

READ, WRITE, AC_WRITE = Permission.READ, Permission.WRITE, Permission.AC_WRITE
EXECUTE, WORKER, ADMIN = Permission.EXECUTE, Permission.WORKER, Permission.ADMIN

ANYONE_KNOWN = frozenset(Permission)  # any permission at all on the instance
READS = frozenset({READ, WORKER})
WRITES = frozenset({WRITE, WORKER})
WORKERS = frozenset({WORKER})  # the Bots API, log stream writes

# Log stream names: {instance}/executions/{id}/logstreams/{id}[/write/{id}] (server/logstreams.py
# and the scheduler), or {parent}/logstreams/{id} for streams a client created.
_LOG_STREAM = re.compile(r"^(?:(?P<parent>.*)/)?logstreams/[0-9a-f]{32}(?P<write>/write/[0-9a-f]{32})?$")
_EXECUTION_PARENT = re.compile(r"^(?:(?P<instance>.*)/)?executions/[0-9a-zA-Z_-]+$")


class Owned(enum.Enum):
    """What a method acts on that belongs to the identity that made it."""

    OPERATION = "operation"  # by operation name
    BOT = "bot"  # by bot id: a new session for a bot replaces its old one
    BOT_SESSION = "bot session"  # by session name


@dataclass(frozen=True, slots=True)
class MethodRule:
    short_name: str  # Service.Method, for messages
    needs: frozenset[Permission]
    instance: Callable[[Any], str]  # request (the first, for streaming requests) -> instance name
    streaming_request: bool = False
    needs_of: Callable[[Any], frozenset[Permission]] | None = None  # when the request decides it
    owned: Owned | None = None
    owned_name: Callable[[Any], str] | None = None

    def permissions_for(self, request: Any) -> frozenset[Permission]:
        return self.needs if self.needs_of is None else self.needs_of(request)


def instance_of_resource(name: str) -> str:
    """The instance part of a ByteStream resource name (blob, upload or log stream)."""
    log_stream = _LOG_STREAM.match(name)
    if log_stream is not None:
        parent = log_stream.group("parent") or ""
        execution = _EXECUTION_PARENT.match(parent)
        return (execution.group("instance") or "") if execution else parent
    segments = name.split("/")
    for i, segment in enumerate(segments):
        if segment in RESERVED_SEGMENTS:
            return "/".join(segments[:i])
    return name  # malformed: the service refuses it; the check used the whole name


def instance_of_operation(name: str) -> str:
    """``{instance}/operations/{id}`` -> instance."""
    head, sep, _ = name.rpartition("operations/")
    return head.rstrip("/") if sep else ""


def instance_of_session(name: str) -> str:
    """``{instance}/{id}`` (the scheduler's bot session names) -> instance."""
    return name.rpartition("/")[0]


def _log_or_blob_write(request: Any) -> frozenset[Permission]:
    match = _LOG_STREAM.match(request.resource_name)
    return WORKERS if match is not None else WRITES


def _instance_name(request: Any) -> str:
    return str(request.instance_name)


def _resource(request: Any) -> str:
    return instance_of_resource(request.resource_name)


def _operation(request: Any) -> str:
    return instance_of_operation(request.name)


def _name(request: Any) -> str:
    return str(request.name)


RE = "/build.bazel.remote.execution.v2."
RULES: dict[str, MethodRule] = {
    f"{RE}Capabilities/GetCapabilities": MethodRule("Capabilities.GetCapabilities", ANYONE_KNOWN, _instance_name),
    f"{RE}ContentAddressableStorage/FindMissingBlobs": MethodRule(
        "FindMissingBlobs", frozenset({READ, WRITE, WORKER}), _instance_name),
    f"{RE}ContentAddressableStorage/BatchUpdateBlobs": MethodRule("BatchUpdateBlobs", WRITES, _instance_name),
    f"{RE}ContentAddressableStorage/BatchReadBlobs": MethodRule("BatchReadBlobs", READS, _instance_name),
    f"{RE}ContentAddressableStorage/GetTree": MethodRule("GetTree", READS, _instance_name),
    f"{RE}ContentAddressableStorage/SplitBlob": MethodRule("SplitBlob", READS, _instance_name),
    f"{RE}ContentAddressableStorage/SpliceBlob": MethodRule("SpliceBlob", WRITES, _instance_name),
    f"{RE}ActionCache/GetActionResult": MethodRule("GetActionResult", frozenset({READ}), _instance_name),
    f"{RE}ActionCache/UpdateActionResult": MethodRule("UpdateActionResult", frozenset({AC_WRITE}), _instance_name),
    f"{RE}Execution/Execute": MethodRule("Execute", frozenset({EXECUTE}), _instance_name),
    f"{RE}Execution/WaitExecution": MethodRule(
        "WaitExecution", frozenset({EXECUTE, ADMIN}), _operation, owned=Owned.OPERATION, owned_name=_name),
    "/google.bytestream.ByteStream/Read": MethodRule("ByteStream.Read", READS, _resource),
    "/google.bytestream.ByteStream/Write": MethodRule(
        "ByteStream.Write", WRITES, _resource, streaming_request=True, needs_of=_log_or_blob_write),
    "/google.bytestream.ByteStream/QueryWriteStatus": MethodRule(
        "ByteStream.QueryWriteStatus", WRITES, _resource, needs_of=_log_or_blob_write),
    "/google.longrunning.Operations/GetOperation": MethodRule(
        "GetOperation", frozenset({EXECUTE, ADMIN}), _operation, owned=Owned.OPERATION, owned_name=_name),
    "/google.longrunning.Operations/WaitOperation": MethodRule(
        "WaitOperation", frozenset({EXECUTE, ADMIN}), _operation, owned=Owned.OPERATION, owned_name=_name),
    "/google.longrunning.Operations/CancelOperation": MethodRule(
        "CancelOperation", frozenset({EXECUTE, ADMIN}), _operation, owned=Owned.OPERATION, owned_name=_name),
    "/google.longrunning.Operations/DeleteOperation": MethodRule(
        "DeleteOperation", frozenset({EXECUTE, ADMIN}), _operation, owned=Owned.OPERATION, owned_name=_name),
    "/google.longrunning.Operations/ListOperations": MethodRule("ListOperations", frozenset({ADMIN}), _name),
    "/google.devtools.remoteworkers.v1test2.Bots/CreateBotSession": MethodRule(
        "CreateBotSession", WORKERS, lambda r: str(r.parent), owned=Owned.BOT,
        owned_name=lambda r: str(r.bot_session.bot_id)),
    "/google.devtools.remoteworkers.v1test2.Bots/UpdateBotSession": MethodRule(
        "UpdateBotSession", WORKERS, lambda r: instance_of_session(r.name), owned=Owned.BOT_SESSION,
        owned_name=_name),
    "/build.bazel.remote.logstream.v1.LogStreamService/CreateLogStream": MethodRule(
        "CreateLogStream", WORKERS, lambda r: str(r.parent).strip("/")),
    "/build.bazel.remote.asset.v1.Fetch/FetchBlob": MethodRule("FetchBlob", frozenset({READ}), _instance_name),
    "/build.bazel.remote.asset.v1.Fetch/FetchDirectory": MethodRule(
        "FetchDirectory", frozenset({READ}), _instance_name),
    "/build.bazel.remote.asset.v1.Push/PushBlob": MethodRule("PushBlob", frozenset({WRITE}), _instance_name),
    "/build.bazel.remote.asset.v1.Push/PushDirectory": MethodRule("PushDirectory", frozenset({WRITE}), _instance_name),
}
