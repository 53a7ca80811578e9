"""The worker reads a lease's inline files in either form (docs/BOTS_PROTOCOL.md section 7):
in the ``reapi-lease-blobs-bin`` entry with the Command and Directories (what servers
without the run form send), or as one run in ``reapi-lease-files-bin`` when the answer
says ``reapi-inline-files-form`` = run; a run the answer did not announce is not read."""

from __future__ import annotations

from cas.blob_run import encode_run
from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.google.devtools.remoteworkers.v1test2 import bots_pb2
from worker.daemon import worker_proto
from worker.leases import lease_context, task_for
from worker.executors import Task
from worker.platform import PlatformProperties

COMMAND = re_pb2.Command(arguments=["true"]).SerializeToString()
FILES = {Digest.of(data): data for data in (b"alpha", b"beta")}
SHA256 = re_pb2.DigestFunction.SHA256


def _answer() -> bots_pb2.BotSession:
    action = re_pb2.Action(command_digest=Digest.of(COMMAND).to_proto(), input_root_digest=Digest.of(b"root").to_proto())
    session = bots_pb2.BotSession(name="s")
    lease = session.leases.add(id="l1", state=bots_pb2.LeaseState.ACTIVE)
    lease.payload.Pack(action)
    return session


def _blobs(blobs: dict[Digest, bytes]) -> bytes:
    response = re_pb2.BatchReadBlobsResponse()
    for digest, data in blobs.items():
        response.responses.add(digest=digest.to_proto(), data=data)
    return response.SerializeToString()


def _task(trailing: list[tuple[str, str | bytes]]) -> Task:
    [(lease, meta, instance, blobs, files)] = lease_context(_answer(), trailing, "")
    return task_for(lease, meta, instance, blobs, 0, files)


def test_files_as_one_run_are_read_with_the_tree() -> None:
    run = encode_run([d.hash for d in FILES], list(FILES.values()))
    task = _task([("reapi-inline-files-form", "run"), ("reapi-lease-blobs-bin", _blobs({Digest.of(COMMAND): COMMAND})),
                  ("reapi-lease-files-bin", run or b"")])
    assert task.inline_blobs == {Digest.of(COMMAND): COMMAND, **FILES}


def test_files_in_the_blobs_entry_are_read_as_before() -> None:
    task = _task([("reapi-lease-blobs-bin", _blobs({Digest.of(COMMAND): COMMAND, **FILES}))])
    assert task.inline_blobs == {Digest.of(COMMAND): COMMAND, **FILES}


def test_a_run_the_answer_did_not_announce_is_not_read() -> None:
    run = encode_run([d.hash for d in FILES], list(FILES.values()))
    task = _task([("reapi-lease-blobs-bin", b""), ("reapi-lease-files-bin", run or b"")])
    assert task.inline_blobs == {}


def test_the_worker_asks_for_the_run_form_with_its_files() -> None:
    properties = PlatformProperties({"OSFamily": ["linux"]})
    asking = {c.key: c.value for c in worker_proto(properties, 1, 1 << 20, inline_file_limit=512 << 10).configs}
    assert asking["reapi-inline-files"] == str(512 << 10) and asking["reapi-inline-files-form"] == "run"
    quiet = {c.key for c in worker_proto(properties, 1, 1 << 20).configs}
    assert "reapi-inline-files-form" not in quiet
