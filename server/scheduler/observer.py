"""Told of each execution a worker finished and each one it lost: the place where
the server's per-execution log line and execution metrics are fed, outside the
scheduler's logic. Called synchronously; must be quick and must not raise."""

from __future__ import annotations

from typing import Protocol

from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.scheduler.operation import PreparedAction


class ExecutionObserver(Protocol):
    def finished(self, action: PreparedAction, response: re_pb2.ExecuteResponse) -> None:
        """A worker's result is final (its execution metadata is filled in)."""

    def retried(self, action: PreparedAction, reason: str) -> None:
        """A worker lost the execution; it goes back to the queue (or fails past its budget)."""
