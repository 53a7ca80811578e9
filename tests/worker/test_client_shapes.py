"""The requests Buck2 and Pants send, in exactly their shapes, against a real server and worker.

The shapes are taken from their clients' code: Buck2's gRPC client
(remote_execution/oss/re_grpc/src/client.rs, app/buck2_execute/src/execute/
command_executor.rs) and Pants' (src/rust/process_execution/src/lib.rs
make_execute_request, process_execution/remote/src/remote.rs,
remote_provider/remote_provider_reapi/src/{lib,byte_store}.rs).

Buck2: RequestMetadata under ``build.bazel.remote.execution.v2.requestmetadata-bin``;
FindMissingBlobs in batches of 100; uploads under 4,000,000 bytes in BatchUpdateBlobs
(IDENTITY), larger ones with ByteStream in zstd when Capabilities offers it (offsets
count compressed bytes, committed_size must be that end or -1); the platform only in
Command.platform; in its compatibility mode an output of either type listed in both
output_files and output_directories; ExecuteRequest with execution and results-cache
policies; the Execute stream read to the end, never WaitExecution; ActionResult must
carry execution_metadata; small downloads in BatchReadBlobs accepting IDENTITY only,
large ones read zstd-compressed.

Pants: RequestMetadata under ``google.devtools.remoteexecution.v1test.requestmetadata-bin``;
sorted environment (with its own PANTS_CACHE_KEY_* variables) and platform in
Command.platform; output_files / output_directories (Pants <= 2.32) or output_paths
(2.33); skip_cache_lookup always set; the Execute stream dropped as soon as an
operation is done; uploads one blob per BatchUpdateBlobs, larger ones by ByteStream
with the resource name on every message, an empty blob as one empty finishing message.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path

import grpc
import zstandard
from google.protobuf import duration_pb2

from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from remote_apis_protos.google.bytestream import bytestream_pb2 as bs_pb2
from remote_apis_protos.google.bytestream import bytestream_pb2_grpc as bs_grpc
from server.app import ReapiServer
from tests.support.servers import channel_to
from tests.worker.actions import response_of
from tests.worker.trees import directory_blobs
from worker.app import Worker

BUCK2_METADATA = "build.bazel.remote.execution.v2.requestmetadata-bin"
PANTS_METADATA = "google.devtools.remoteexecution.v1test.requestmetadata-bin"
BUCK2_MAX_BATCH = 4 * 1000 * 1000  # DEFAULT_MAX_TOTAL_BATCH_SIZE
BUCK2_FIND_MISSING_BATCH = 100
LINUX = [("OSFamily", "linux")]
BIG_INPUT = b"".join(b"src/module_%04d.cc:%d: note: inlined from here\n" % (i % 977, i) for i in range(120_000))


def request_metadata(key: str, tool: str, version: str) -> tuple[tuple[str, bytes], ...]:
    metadata = re_pb2.RequestMetadata(
        tool_details=re_pb2.ToolDetails(tool_name=tool, tool_version=version), tool_invocation_id=str(uuid.uuid4())
    )
    return ((key, metadata.SerializeToString()),)


class Buck2Like:
    """Buck2's REv2 client calls, in its shapes."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.cas = re_grpc.ContentAddressableStorageStub(channel)
        self.bytestream = bs_grpc.ByteStreamStub(channel)
        self.execution = re_grpc.ExecutionStub(channel)
        self.capabilities = re_grpc.CapabilitiesStub(channel)
        self.metadata = request_metadata(BUCK2_METADATA, "buck2", "0.1.0")
        self.compressor = ""
        self.find_missing_batches: list[int] = []
        self.compressed_uploads = 0

    async def connect(self) -> None:
        caps = await self.capabilities.GetCapabilities(re_pb2.GetCapabilitiesRequest(), metadata=self.metadata)
        if re_pb2.Compressor.ZSTD in caps.cache_capabilities.supported_compressors:
            self.compressor = "zstd"  # Buck2 prefers zstd, then brotli, then deflate

    async def find_missing(self, digests: Sequence[Digest]) -> set[Digest]:
        missing: set[Digest] = set()
        for start in range(0, len(digests), BUCK2_FIND_MISSING_BATCH):
            batch = digests[start : start + BUCK2_FIND_MISSING_BATCH]
            self.find_missing_batches.append(len(batch))
            response = await self.cas.FindMissingBlobs(
                re_pb2.FindMissingBlobsRequest(blob_digests=[d.to_proto() for d in batch]), metadata=self.metadata
            )
            missing |= {Digest.from_proto(d) for d in response.missing_blob_digests}
        return missing

    async def upload(self, blobs: dict[Digest, bytes]) -> None:
        batch = re_pb2.BatchUpdateBlobsRequest()
        total = 0
        for digest, data in blobs.items():
            if digest.size_bytes >= BUCK2_MAX_BATCH:
                await self._write(digest, data)
                continue
            if total + digest.size_bytes >= BUCK2_MAX_BATCH:
                await self._batch_update(batch)
                batch, total = re_pb2.BatchUpdateBlobsRequest(), 0
            batch.requests.add(digest=digest.to_proto(), data=data, compressor=re_pb2.Compressor.IDENTITY)
            total += digest.size_bytes
        if batch.requests:
            await self._batch_update(batch)

    async def _batch_update(self, request: re_pb2.BatchUpdateBlobsRequest) -> None:
        response = await self.cas.BatchUpdateBlobs(request, metadata=self.metadata)
        assert all(r.status.code == 0 for r in response.responses), response

    async def _write(self, digest: Digest, data: bytes) -> None:
        assert self.compressor == "zstd"
        name = f"uploads/{uuid.uuid4()}/compressed-blobs/zstd/{digest.hash}/{digest.size_bytes}"
        encoder = zstandard.ZstdCompressor().compressobj()
        form = encoder.compress(data) + encoder.flush()
        requests, offset = [], 0
        for start in range(0, len(form), BUCK2_MAX_BATCH):
            piece = form[start : start + BUCK2_MAX_BATCH]
            requests.append(bs_pb2.WriteRequest(resource_name=name, write_offset=offset, data=piece))
            offset += len(piece)
        requests[-1].finish_write = True

        async def messages():  # type: ignore[no-untyped-def]
            for request in requests:
                yield request

        response = await self.bytestream.Write(messages(), metadata=self.metadata)
        assert response.committed_size in (offset, -1), (response.committed_size, offset)
        self.compressed_uploads += 1

    async def execute(self, action: Digest, skip_cache_lookup: bool = False) -> re_pb2.ExecuteResponse:
        request = re_pb2.ExecuteRequest(
            skip_cache_lookup=skip_cache_lookup,
            execution_policy=re_pb2.ExecutionPolicy(priority=0),
            results_cache_policy=re_pb2.ResultsCachePolicy(priority=0),
            action_digest=action.to_proto(),
        )
        last = None
        async for operation in self.execution.Execute(request, metadata=self.metadata):  # to its end; no WaitExecution
            last = operation
        assert last is not None and last.done
        response = response_of(last)
        assert response.result.HasField("execution_metadata")  # Buck2: "The execution metadata are not defined."
        return response

    async def download(self, digests: Sequence[Digest]) -> dict[Digest, bytes]:
        out: dict[Digest, bytes] = {}
        small = [d for d in digests if 0 < d.size_bytes < BUCK2_MAX_BATCH]
        if small:
            response = await self.cas.BatchReadBlobs(
                re_pb2.BatchReadBlobsRequest(digests=[d.to_proto() for d in small],
                                             acceptable_compressors=[re_pb2.Compressor.IDENTITY]),
                metadata=self.metadata,
            )
            for item in response.responses:
                assert item.status.code == 0 and item.compressor == re_pb2.Compressor.IDENTITY
                out[Digest.from_proto(item.digest)] = item.data
        for digest in (d for d in digests if d.size_bytes >= BUCK2_MAX_BATCH):
            name = f"compressed-blobs/{self.compressor}/{digest.hash}/{digest.size_bytes}"
            read = self.bytestream.Read(bs_pb2.ReadRequest(resource_name=name, read_offset=0, read_limit=0),
                                        metadata=self.metadata)
            form = b"".join([r.data async for r in read])
            out[digest] = zstandard.ZstdDecompressor().decompressobj(read_across_frames=True).decompress(form)
        return out


async def test_buck2_shapes(exec_server: ReapiServer, worker: Worker) -> None:
    async with channel_to(exec_server) as channel:
        buck2 = Buck2Like(channel)
        await buck2.connect()
        assert buck2.compressor == "zstd"
        blobs: dict[Digest, bytes] = {}
        inputs = {"srcs": {f"f{i:03d}.h": b"#define F%d %d\n" % (i, i) for i in range(250)}, "big.txt": BIG_INPUT}
        root = directory_blobs(inputs, blobs)  # type: ignore[arg-type]
        outputs = ["out/big.txt", "out/tree"]  # FileOrDirectory: in both lists
        command = re_pb2.Command(
            arguments=["sh", "-c", "mkdir -p out/tree && cat big.txt big.txt > out/big.txt && "
                                   "ls srcs | wc -l > out/tree/count && wc -c < big.txt > out/size"],
            platform=re_pb2.Platform(properties=[re_pb2.Platform.Property(name=n, value=v) for n, v in LINUX]),
            working_directory="",
            environment_variables=[re_pb2.Command.EnvironmentVariable(name="BUCK_BUILD_ID", value="b1")],
            output_files=outputs + ["out/size"],  # a File output, then the either-type ones
            output_directories=outputs,
        )
        command_data = command.SerializeToString(deterministic=True)
        blobs[Digest.of(command_data)] = command_data
        action = re_pb2.Action(
            input_root_digest=root.to_proto(), command_digest=Digest.of(command_data).to_proto(),
            timeout=duration_pb2.Duration(seconds=60), do_not_cache=False,
        )  # no Action.platform: Buck2 fills only Command.platform
        action_data = action.SerializeToString(deterministic=True)
        blobs[Digest.of(action_data)] = action_data
        missing = await buck2.find_missing(list(blobs))
        assert len(blobs) == 255 and buck2.find_missing_batches == [100, 100, 55] and missing == set(blobs)
        await buck2.upload({d: blobs[d] for d in missing})
        assert buck2.compressed_uploads == 1  # big.txt, over 4 MB
        assert await buck2.find_missing(list(blobs)) == set()

        response = await buck2.execute(Digest.of(action_data))
        assert response.status.code == 0 and response.result.exit_code == 0, response
        files = {f.path: Digest.from_proto(f.digest) for f in response.result.output_files}
        assert set(files) == {"out/big.txt", "out/size"}
        assert [d.path for d in response.result.output_directories] == ["out/tree"]
        tree_digest = Digest.from_proto(response.result.output_directories[0].tree_digest)
        got = await buck2.download([files["out/big.txt"], files["out/size"], tree_digest])
        assert got[files["out/big.txt"]] == BIG_INPUT * 2  # read zstd-compressed
        assert got[files["out/size"]].strip() == str(len(BIG_INPUT)).encode()
        tree = re_pb2.Tree()
        tree.ParseFromString(got[tree_digest])
        count = (await buck2.download([Digest.from_proto(tree.root.files[0].digest)])).popitem()[1]
        assert count.strip() == b"250"
        # A second Execute of the same action is a cache hit, answered the same way.
        again = await buck2.execute(Digest.of(action_data))
        assert again.cached_result and {f.path for f in again.result.output_files} == set(files)


class PantsLike:
    """Pants' REv2 client calls, in its shapes."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.cas = re_grpc.ContentAddressableStorageStub(channel)
        self.bytestream = bs_grpc.ByteStreamStub(channel)
        self.execution = re_grpc.ExecutionStub(channel)
        self.metadata = request_metadata(PANTS_METADATA, "pants", "")

    async def store(self, blobs: dict[Digest, bytes], chunk: int = 1 << 20) -> None:
        response = await self.cas.FindMissingBlobs(
            re_pb2.FindMissingBlobsRequest(blob_digests=[d.to_proto() for d in blobs]), metadata=self.metadata
        )
        for proto in response.missing_blob_digests:
            digest = Digest.from_proto(proto)
            data = blobs[digest]
            if len(data) < 4 << 20:  # one blob per BatchUpdateBlobs
                await self.cas.BatchUpdateBlobs(re_pb2.BatchUpdateBlobsRequest(requests=[
                    re_pb2.BatchUpdateBlobsRequest.Request(digest=proto, data=data, compressor=re_pb2.Compressor.IDENTITY)
                ]), metadata=self.metadata)
            else:
                await self.write(digest, data, chunk)

    async def write(self, digest: Digest, data: bytes, chunk: int = 1 << 20) -> bs_pb2.WriteResponse:
        name = f"uploads/{uuid.uuid4()}/blobs/{digest.hash}/{digest.size_bytes}"

        async def messages():  # type: ignore[no-untyped-def]
            if not data:
                yield bs_pb2.WriteRequest(resource_name=name, write_offset=0, finish_write=True)
                return
            for start in range(0, len(data), chunk):
                piece = data[start : start + chunk]  # the resource name on every message
                yield bs_pb2.WriteRequest(resource_name=name, write_offset=start, data=piece,
                                          finish_write=start + len(piece) == len(data))

        return await self.bytestream.Write(messages(), metadata=self.metadata)

    async def load(self, digest: Digest) -> bytes:
        read = self.bytestream.Read(
            bs_pb2.ReadRequest(resource_name=f"blobs/{digest.hash}/{digest.size_bytes}", read_offset=0, read_limit=0),
            metadata=self.metadata,
        )
        return b"".join([r.data async for r in read])

    async def execute(self, action: Digest) -> re_pb2.ExecuteResponse:
        """Execute, and drop the stream at the first done operation."""
        call = self.execution.Execute(
            re_pb2.ExecuteRequest(action_digest=action.to_proto(), instance_name="", skip_cache_lookup=True),
            metadata=self.metadata,
        )
        async for operation in call:
            if operation.done:
                call.cancel()
                return response_of(operation)
        raise AssertionError("the stream ended without a done operation")


def pants_command(argv: list[str], outputs: dict[str, list[str]]) -> re_pb2.Command:
    command = re_pb2.Command(arguments=argv, **outputs)  # type: ignore[arg-type]
    env = {"PANTS_CACHE_KEY_EXECUTION_STRATEGY": "remote_execution", "PANTS_CACHE_KEY_TARGET_PLATFORM": "linux_x86_64",
           "LANG": "C.UTF-8"}
    for name in sorted(env):
        command.environment_variables.add(name=name, value=env[name])
    for name, value in sorted(LINUX):
        command.platform.properties.add(name=name, value=value)
    return command


async def pants_action(pants: PantsLike, command: re_pb2.Command, inputs: dict) -> Digest:  # type: ignore[type-arg]
    blobs: dict[Digest, bytes] = {}
    root = directory_blobs(inputs, blobs)
    command_data = command.SerializeToString(deterministic=True)
    blobs[Digest.of(command_data)] = command_data
    action = re_pb2.Action(command_digest=Digest.of(command_data).to_proto(), input_root_digest=root.to_proto(),
                           timeout=duration_pb2.Duration(seconds=60))
    action_data = action.SerializeToString(deterministic=True)
    blobs[Digest.of(action_data)] = action_data
    await pants.store(blobs)
    return Digest.of(action_data)


async def test_pants_shapes(exec_server: ReapiServer, worker: Worker) -> None:
    async with channel_to(exec_server) as channel:
        pants = PantsLike(channel)
        assert (await pants.write(Digest.empty(), b"")).committed_size == 0  # an empty blob: one empty message
        script = ("mkdir -p dist/pkg && cat data.bin > dist/pkg/copy.bin && "
                  "od -An -N8 -tx8 /dev/urandom > dist/out.txt")  # a fresh value on every run
        inputs = {"data.bin": BIG_INPUT[:5_000_000]}  # over 4 MiB: uploaded with ByteStream
        shapes = {  # Pants <= 2.32, and 2.33
            "output_files/output_directories": {"output_files": ["dist/out.txt"], "output_directories": ["dist/pkg"]},
            "output_paths": {"output_paths": sorted(["dist/out.txt", "dist/pkg"])},
        }
        for shape, outputs in shapes.items():
            action = await pants_action(pants, pants_command(["sh", "-c", script], outputs), inputs)
            first = await pants.execute(action)
            assert first.status.code == 0 and first.result.exit_code == 0, (shape, first)
            assert [f.path for f in first.result.output_files] == ["dist/out.txt"], shape
            assert [d.path for d in first.result.output_directories] == ["dist/pkg"], shape
            # skip_cache_lookup: the second run executes again, whatever the cache holds.
            second = await pants.execute(action)
            assert not second.cached_result, shape
            values = {await pants.load(Digest.from_proto(r.result.output_files[0].digest)) for r in (first, second)}
            assert len(values) == 2, shape
            tree = re_pb2.Tree()
            tree.ParseFromString(await pants.load(Digest.from_proto(second.result.output_directories[0].tree_digest)))
            copy = await pants.load(Digest.from_proto(tree.root.files[0].digest))
            assert copy == BIG_INPUT[:5_000_000], shape


async def test_a_dropped_execute_stream_leaves_the_server_serving(exec_server: ReapiServer, worker: Worker,
                                                                  tmp_path: Path) -> None:
    """Pants cancels its Execute call at done; the next calls on the same channel go on as usual."""
    async with channel_to(exec_server) as channel:
        pants = PantsLike(channel)
        for i in range(3):
            command = pants_command(["sh", "-c", f"echo run {i} > out.txt"], {"output_files": ["out.txt"]})
            response = await pants.execute(await pants_action(pants, command, {}))
            assert response.result.exit_code == 0
            assert await pants.load(Digest.from_proto(response.result.output_files[0].digest)) == f"run {i}\n".encode()
