"""A plain bot in BuildGrid's conventions, for benchmarks only: the baseline reapi-worker is measured against.

    .venv/bin/python -m tests.benchmarks.plain_bot --server HOST:PORT --work-dir DIR [--property KEY=VALUE ...]

What a straightforward Python bot does with a lease (as BuildGrid's own host-tools
bot and its CAS client do): the Action from ``Lease.payload``, the Command with one
BatchReadBlobs, the input tree with GetTree, then the files with BatchReadBlobs in
batches bounded by size, each written straight into a fresh directory (no local
cache, no verification, no sandbox), the command run with ``subprocess``, output
files uploaded with BatchUpdateBlobs, the ActionResult reported. The calls are held
only while it has no lease, as BuildGrid's bots expect. It stamps the same
ExecutedActionMetadata timestamps as reapi-worker, so the two compare phase by phase.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import grpc
from google.rpc import code_pb2, status_pb2

from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from remote_apis_protos.google.devtools.remoteworkers.v1test2 import bots_pb2
from remote_apis_protos.google.devtools.remoteworkers.v1test2 import bots_pb2_grpc as bots_grpc
from remote_apis_protos.google.devtools.remoteworkers.v1test2 import worker_pb2

BATCH_BYTES = 2 << 20  # what a BatchReadBlobs may carry, well under the 4 MiB message limit


class PlainBot:
    def __init__(self, server: str, work_dir: Path, properties: list[tuple[str, str]], bot_id: str) -> None:
        self.channel = grpc.insecure_channel(server)
        self.bots = bots_grpc.BotsStub(self.channel)
        self.cas = re_grpc.ContentAddressableStorageStub(self.channel)
        self.work_dir = work_dir
        self.worker = worker_pb2.Worker(properties=[worker_pb2.Worker.Property(key=k, value=v) for k, v in properties])
        self.bot_id = bot_id

    def serve(self) -> None:
        session = self.bots.CreateBotSession(bots_pb2.CreateBotSessionRequest(
            bot_session=bots_pb2.BotSession(bot_id=self.bot_id, status=bots_pb2.BotStatus.OK, worker=self.worker)))
        print(f"bot session {session.name} created (bot id {self.bot_id})", flush=True)
        while True:
            for lease in session.leases:
                if lease.state == bots_pb2.LeaseState.ACTIVE:
                    self.run(lease)
            session = self.bots.UpdateBotSession(
                bots_pb2.UpdateBotSessionRequest(name=session.name, bot_session=session), timeout=60)

    def run(self, lease: bots_pb2.Lease) -> None:
        result = re_pb2.ActionResult()
        meta = result.execution_metadata
        meta.worker = self.bot_id
        meta.worker_start_timestamp.GetCurrentTime()
        action = re_pb2.Action()
        lease.payload.Unpack(action)
        root = self.work_dir / uuid.uuid4().hex
        status = status_pb2.Status(code=code_pb2.OK)
        try:
            meta.input_fetch_start_timestamp.GetCurrentTime()
            command = re_pb2.Command()
            command.ParseFromString(self.read([action.command_digest])[0])
            self.download_tree(action.input_root_digest, root)
            meta.input_fetch_completed_timestamp.GetCurrentTime()
            cwd = root / command.working_directory
            for path in command.output_files:
                (cwd / path).parent.mkdir(parents=True, exist_ok=True)
            meta.execution_start_timestamp.GetCurrentTime()
            ran = subprocess.run(list(command.arguments), cwd=cwd, capture_output=True,
                                 env={v.name: v.value for v in command.environment_variables})
            meta.execution_completed_timestamp.GetCurrentTime()
            meta.output_upload_start_timestamp.GetCurrentTime()
            result.exit_code = ran.returncode
            result.stdout_raw, result.stderr_raw = ran.stdout, ran.stderr
            self.upload_outputs(cwd, command, result)
            meta.output_upload_completed_timestamp.GetCurrentTime()
        except Exception as exc:  # noqa: BLE001 - a benchmark bot reports whatever went wrong
            status = status_pb2.Status(code=code_pb2.INTERNAL, message=f"plain bot: {exc!r}")
        finally:
            shutil.rmtree(root, ignore_errors=True)
        meta.worker_completed_timestamp.GetCurrentTime()
        lease.state = bots_pb2.LeaseState.COMPLETED
        lease.result.Pack(result)
        lease.status.CopyFrom(status)

    def read(self, digests: list[re_pb2.Digest]) -> list[bytes]:
        response = self.cas.BatchReadBlobs(re_pb2.BatchReadBlobsRequest(digests=digests))
        by_hash = {r.digest.hash: r.data for r in response.responses if r.status.code == code_pb2.OK}
        return [by_hash[d.hash] for d in digests]

    def download_tree(self, root_digest: re_pb2.Digest, root: Path) -> None:
        directories: dict[str, re_pb2.Directory] = {}
        for page in self.cas.GetTree(re_pb2.GetTreeRequest(root_digest=root_digest)):
            for directory in page.directories:
                directories[hashlib.sha256(directory.SerializeToString()).hexdigest()] = directory
        files: list[tuple[re_pb2.Digest, Path, bool]] = []
        pending = [(root, root_digest.hash)]
        root.mkdir(parents=True)
        while pending:
            path, digest = pending.pop()
            directory = directories[digest]
            for file in directory.files:
                files.append((file.digest, path / file.name, file.is_executable))
            for child in directory.directories:
                (path / child.name).mkdir()
                pending.append((path / child.name, child.digest.hash))
            for link in directory.symlinks:
                os.symlink(link.target, path / link.name)
        batch: list[tuple[re_pb2.Digest, Path, bool]] = []
        size = 0
        for entry in files:
            if batch and size + entry[0].size_bytes > BATCH_BYTES:
                self.write_batch(batch)
                batch, size = [], 0
            batch.append(entry)
            size += entry[0].size_bytes
        if batch:
            self.write_batch(batch)

    def write_batch(self, batch: list[tuple[re_pb2.Digest, Path, bool]]) -> None:
        for (_, path, executable), data in zip(batch, self.read([d for d, _, _ in batch])):
            with open(path, "wb") as f:
                f.write(data)
            if executable:
                os.chmod(path, 0o755)

    def upload_outputs(self, cwd: Path, command: re_pb2.Command, result: re_pb2.ActionResult) -> None:
        requests = []
        for path in command.output_files:
            file = cwd / path
            if not file.is_file():
                continue
            data = file.read_bytes()
            digest = re_pb2.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
            requests.append(re_pb2.BatchUpdateBlobsRequest.Request(digest=digest, data=data))
            result.output_files.add(path=path, digest=digest, is_executable=os.access(file, os.X_OK))
        if requests:
            self.cas.BatchUpdateBlobs(re_pb2.BatchUpdateBlobsRequest(requests=requests))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--property", action="append", default=[])
    parser.add_argument("--bot-id", default=f"plain-bot-{os.getpid()}")
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    properties = [tuple(p.split("=", 1)) for p in args.property]
    tempfile.tempdir = str(args.work_dir)
    PlainBot(args.server, args.work_dir, properties, args.bot_id).serve()  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
