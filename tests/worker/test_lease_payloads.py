"""A lease whose payload is not a well-formed REv2 Action is the server's fault, told in
the lease's own result (INVALID_ARGUMENT naming the lease), never an exception that
escapes the worker's session loop (worker/leases.py ``task_for``)."""

from __future__ import annotations

import pytest

from cas.digest import Digest
from cas.errors import InvalidArgument
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.google.devtools.remoteworkers.v1test2 import bots_pb2
from worker.leases import task_for

ACTION_TYPE = "type.googleapis.com/build.bazel.remote.execution.v2.Action"


def _lease(type_url: str, value: bytes) -> bots_pb2.Lease:
    lease = bots_pb2.Lease(id="lease-7", state=bots_pb2.LeaseState.PENDING)
    lease.payload.type_url = type_url
    lease.payload.value = value
    return lease


def test_a_payload_of_another_type_is_invalid_argument_naming_it() -> None:
    with pytest.raises(InvalidArgument, match="lease lease-7: payload is type.googleapis.com/x.Y, not an REv2 Action"):
        task_for(_lease("type.googleapis.com/x.Y", b""), None, "")


def test_an_action_payload_that_does_not_parse_is_invalid_argument_naming_the_lease() -> None:
    with pytest.raises(InvalidArgument, match="lease lease-7: payload is not a well-formed REv2 Action"):
        task_for(_lease(ACTION_TYPE, b"\xff\xff\xff"), None, "")


def test_a_well_formed_action_payload_makes_a_task() -> None:
    action = re_pb2.Action(command_digest=Digest.of(b"command").to_proto(), do_not_cache=True)
    assert task_for(_lease(ACTION_TYPE, action.SerializeToString()), None, "").action == action
