"""A small REv2 client for worker tests: upload an action, execute it, read the result."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

import grpc
from google.protobuf import duration_pb2

from cas.digest import Digest
from cas.remote.store import RemoteStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from remote_apis_protos.google.longrunning import operations_pb2 as lro_pb2
from remote_apis_protos.google.longrunning import operations_pb2_grpc as lro_grpc
from tests.worker.trees import Node, put_message, put_tree

SHA256 = re_pb2.DigestFunction.SHA256


@dataclass
class ActionClient:
    channel: grpc.aio.Channel
    instance_name: str = ""
    function: int = SHA256
    store: RemoteStore = field(init=False)

    def __post_init__(self) -> None:
        self.store = RemoteStore(self.channel, self.instance_name)
        self.execution = re_grpc.ExecutionStub(self.channel)
        self.operations = lro_grpc.OperationsStub(self.channel)

    async def action(
        self,
        argv: Sequence[str],
        inputs: Mapping[str, Node] | None = None,
        *,
        outputs: Sequence[str] = (),
        output_files: Sequence[str] = (),
        output_directories: Sequence[str] = (),
        platform: Mapping[str, str] | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        working_directory: str = "",
        salt: bytes = b"",
        do_not_cache: bool = True,
    ) -> Digest:
        """Upload a Command, its input tree and the Action; return the action digest."""
        root = await put_tree(self.store, dict(inputs or {}), self.function)
        command = re_pb2.Command(
            arguments=list(argv), output_paths=list(outputs), output_files=list(output_files),
            output_directories=list(output_directories), working_directory=working_directory,
        )
        for name, value in sorted((env or {}).items()):
            command.environment_variables.add(name=name, value=value)
        props = sorted((platform or {"OSFamily": "linux"}).items())
        for name, value in props:
            command.platform.properties.add(name=name, value=value)
        action = re_pb2.Action(
            command_digest=(await put_message(self.store, command, self.function)).to_proto(),
            input_root_digest=root.to_proto(),
            do_not_cache=do_not_cache,
            salt=salt,
        )
        action.platform.CopyFrom(command.platform)
        if timeout is not None:
            action.timeout.CopyFrom(duration_pb2.Duration(seconds=int(timeout), nanos=int((timeout % 1) * 1e9)))
        return await put_message(self.store, action, self.function)

    def stream(self, action_digest: Digest) -> grpc.aio.UnaryStreamCall[re_pb2.ExecuteRequest, lro_pb2.Operation]:
        request = re_pb2.ExecuteRequest(
            instance_name=self.instance_name, action_digest=action_digest.to_proto(), skip_cache_lookup=True,
            digest_function=0 if self.function == SHA256 else self.function,  # type: ignore[arg-type]
        )
        return self.execution.Execute(request)

    async def execute(self, action_digest: Digest) -> re_pb2.ExecuteResponse:
        last = None
        async for operation in self.stream(action_digest):
            last = operation
        assert last is not None and last.done, last
        return response_of(last)

    async def run(self, argv: Sequence[str], inputs: Mapping[str, Node] | None = None, **kw: object) -> re_pb2.ExecuteResponse:
        return await self.execute(await self.action(argv, inputs, **kw))  # type: ignore[arg-type]

    async def blob(self, digest: re_pb2.Digest) -> bytes:
        if not digest.hash:
            return b""
        return await self.store.get_bytes(Digest.from_proto(digest, self.function))


def response_of(operation: lro_pb2.Operation) -> re_pb2.ExecuteResponse:
    assert not operation.HasField("error"), operation.error
    response = re_pb2.ExecuteResponse()
    assert operation.response.Unpack(response)
    return response


def metadata_of(operation: lro_pb2.Operation) -> re_pb2.ExecuteOperationMetadata:
    meta = re_pb2.ExecuteOperationMetadata()
    operation.metadata.Unpack(meta)
    return meta
