"""RequestMetadata: which tool, invocation and action a call is for, read from the
call's binary metadata under either key clients use.

Bazel sends ``build.bazel.remote.execution.v2.requestmetadata-bin``; Pants and
other older clients ``google.devtools.remoteexecution.v1test.requestmetadata-bin``,
whose message has the same field numbers for what both carry (tool details, action
id, tool invocation id, correlated invocations id). Read from a real build
(tests/e2e/test_observability.py), Debian's Bazel 4.2.3 also fills
``action_mnemonic`` (CppCompile), ``target_id`` (//cc:greet) and
``configuration_id`` (a hash), and sends tool_name "bazel" with an empty version.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf.message import DecodeError

from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2

KEYS = ("build.bazel.remote.execution.v2.requestmetadata-bin",
        "google.devtools.remoteexecution.v1test.requestmetadata-bin")


def request_metadata(metadata: Iterable[Any] | None) -> re_pb2.RequestMetadata | None:
    """The first RequestMetadata found in gRPC invocation metadata, or None."""
    for item in metadata or ():
        key, value = item[0], item[1]
        if key in KEYS and isinstance(value, bytes):
            parsed = re_pb2.RequestMetadata()
            try:
                parsed.ParseFromString(value)
            except DecodeError:
                return None
            return parsed
    return None


def describe_client(metadata: re_pb2.RequestMetadata | None) -> str:
    """``bazel 4.2.3, invocation 6f1c...`` for log lines; "" when the client sent nothing."""
    if metadata is None:
        return ""
    tool = " ".join(p for p in (metadata.tool_details.tool_name, metadata.tool_details.tool_version) if p)
    parts = [tool or "unknown tool"]
    if metadata.tool_invocation_id:
        parts.append(f"invocation {metadata.tool_invocation_id}")
    if metadata.target_id:
        parts.append(f"target {metadata.target_id}")
    return ", ".join(parts)
