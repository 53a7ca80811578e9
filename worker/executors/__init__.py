"""The executor chain: one protocol, decorators around a local executor.

``execute(task) -> ExecuteResponse`` never raises for the action's own failures
(a missing input, a timeout, a bad tree, a non-zero exit): those are data, in
``response.status`` and ``response.result``. It raises only ``CancelledError``
(the lease was taken away). worker/app.py writes the chain out top to bottom:
local -> timestamped -> metrics -> logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2


@dataclass(frozen=True)
class Task:
    """One lease's work, as the Bots session delivered it."""

    lease_id: str
    action: re_pb2.Action
    action_digest: Digest | None  # for logs; None when the server did not say
    instance_name: str = ""
    digest_function: int = re_pb2.DigestFunction.SHA256
    stdout_stream: str = ""  # LogStream write resource names ("" = none)
    stderr_stream: str = ""
    # Blobs the lease carried (its Command, input Directories), unverified; and how many
    # bytes of outputs the report may carry inline (docs/BOTS_PROTOCOL.md section 7; 0 = none).
    inline_blobs: Mapping[Digest, bytes] = field(default_factory=dict)
    inline_limit: int = 0

    @property
    def label(self) -> str:
        return str(self.action_digest) if self.action_digest else self.lease_id


class Executor(Protocol):
    async def execute(self, task: Task) -> re_pb2.ExecuteResponse: ...
