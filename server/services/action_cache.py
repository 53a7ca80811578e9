"""ActionCache: GetActionResult and UpdateActionResult over cas.action_cache.ActionCache.

The service only translates: the completeness check, inlining and validation live
in cas/ac/action_cache.py, where the execution service reuses them. A hit that asks
for nothing inline (Bazel's every hit) is answered with the stored result's bytes,
unparsed (sent as they are, server/encoded_responses.py). A miss is
NOT_FOUND (clients read it as "run the action"); an unknown instance is
INVALID_ARGUMENT, never NOT_FOUND, so it cannot pass for a miss.
"""

from __future__ import annotations

import logging

import grpc

from cas.digest import Digest
from cas.errors import NotFound, PermissionDenied
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from server import boundary
from server.instances import InstanceRegistry
from server.metrics.families import ServerMetrics

log = logging.getLogger("reapi.server.action_cache")


class ActionCacheService(re_grpc.ActionCacheServicer):
    def __init__(self, instances: InstanceRegistry, metrics: ServerMetrics | None = None) -> None:
        self.instances = instances
        self.metrics = metrics

    @boundary.unary
    async def GetActionResult(
        self, request: re_pb2.GetActionResultRequest, context: grpc.aio.ServicerContext
    ) -> re_pb2.ActionResult | bytes:
        instance = self.instances.get(request.instance_name)
        digest = Digest.from_proto(request.action_digest, request.digest_function)
        result: re_pb2.ActionResult | bytes | None
        if request.inline_stdout or request.inline_stderr or request.inline_output_files:
            result = await instance.action_cache.get(
                digest,
                inline_stdout=request.inline_stdout,
                inline_stderr=request.inline_stderr,
                inline_output_files=request.inline_output_files,
            )
        else:  # the usual hit (Bazel asks for nothing inline): the stored bytes as they are
            result = await instance.action_cache.get_encoded(digest)
        if self.metrics is not None:
            (self.metrics.ac_misses if result is None else self.metrics.ac_hits).inc()
        if result is None:
            raise NotFound(f"no action result for {digest} in the action cache")
        return result

    @boundary.unary
    async def UpdateActionResult(
        self, request: re_pb2.UpdateActionResultRequest, context: grpc.aio.ServicerContext
    ) -> re_pb2.ActionResult:
        instance = self.instances.get(request.instance_name)
        if not instance.config.ac_update_enabled:
            raise PermissionDenied(
                f"instance {request.instance_name!r} does not accept action results from clients "
                "(ac_update_enabled = false; Capabilities says so too)"
            )
        digest = Digest.from_proto(request.action_digest, request.digest_function)
        stored = await instance.action_cache.put(digest, request.action_result)
        log.debug("stored the result of %s for instance %r", digest, request.instance_name)
        return stored
