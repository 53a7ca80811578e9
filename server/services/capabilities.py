"""Capabilities: tells clients, truthfully, what this server supports.

Compressors are listed exactly as served (ByteStream and batch updates alike); split
and splice are on, with FastCDC 2020's parameters (REv2 recommends a 512 KiB average,
seed 0).
"""

from __future__ import annotations

import grpc

from cas.chunking.fastcdc import FastCdcParams
from cas.compression.codecs import Codecs
from cas.digest import ALGORITHMS
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from remote_apis_protos.build.bazel.semver import semver_pb2
from server import boundary
from server.instances import InstanceRegistry

LOW_API_VERSION = semver_pb2.SemVer(major=2, minor=0)
# The newest REv2 minor whose cache-side features we serve in full.
HIGH_API_VERSION = semver_pb2.SemVer(major=2, minor=3)


class CapabilitiesService(re_grpc.CapabilitiesServicer):
    def __init__(
        self,
        instances: InstanceRegistry,
        max_batch_total_size_bytes: int,
        execution: re_pb2.ExecutionCapabilities | None = None,
        codecs: Codecs | None = None,
        chunking: FastCdcParams | None = None,
    ) -> None:
        self.instances = instances
        self.max_batch_total_size_bytes = max_batch_total_size_bytes
        self.codecs = codecs if codecs is not None else Codecs([])
        self.chunking = chunking or FastCdcParams()
        # Built by the composition root when remote execution is enabled.
        self.execution = execution or re_pb2.ExecutionCapabilities(exec_enabled=False)

    @boundary.unary
    async def GetCapabilities(
        self, request: re_pb2.GetCapabilitiesRequest, context: grpc.aio.ServicerContext
    ) -> re_pb2.ServerCapabilities:
        instance = self.instances.get(request.instance_name)
        cache = re_pb2.CacheCapabilities(
            digest_functions=sorted(ALGORITHMS.keys()),  # type: ignore[arg-type]
            action_cache_update_capabilities=re_pb2.ActionCacheUpdateCapabilities(
                update_enabled=instance.config.ac_update_enabled
            ),
            max_batch_total_size_bytes=self.max_batch_total_size_bytes,
            symlink_absolute_path_strategy=re_pb2.SymlinkAbsolutePathStrategy.ALLOWED,
            # Identity is always supported and is not listed.
            supported_compressors=self.codecs.values,  # type: ignore[arg-type]
            supported_batch_update_compressors=self.codecs.values,  # type: ignore[arg-type]
            split_blob_support=True,
            splice_blob_support=True,
            fast_cdc_2020_params=re_pb2.FastCdc2020Params(
                avg_chunk_size_bytes=self.chunking.avg_size, seed=self.chunking.seed
            ),
        )
        return re_pb2.ServerCapabilities(
            cache_capabilities=cache,
            execution_capabilities=self.execution,
            low_api_version=LOW_API_VERSION,
            high_api_version=HIGH_API_VERSION,
        )
