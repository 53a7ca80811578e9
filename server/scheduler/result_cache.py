"""Execute's view of the action cache: one ActionCache per configured instance
(and of the instance's CAS, for outputs a bot reported inline).

The lookup is the same one GetActionResult makes (a hit only if every referenced
blob still exists), so Execute never answers a cached result whose outputs are gone.
"""

from __future__ import annotations

from collections.abc import Mapping

from cas.ac.action_cache import ActionCache
from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.instances import Instance, InstanceRegistry


class InstanceResultCache:
    def __init__(self, instances: InstanceRegistry) -> None:
        self.instances = instances
        self._caches: dict[int, ActionCache] = {}

    def _cache(self, instance: Instance) -> ActionCache:
        cache = self._caches.get(id(instance))
        if cache is None:
            cache = ActionCache(instance.ac, instance.cas, check_completeness=instance.config.ac_completeness_check)
            self._caches[id(instance)] = cache
        return cache

    async def lookup(self, instance_name: str, action_digest: Digest) -> re_pb2.ActionResult | None:
        return await self._cache(self.instances.get(instance_name)).get(action_digest)

    async def store(self, instance_name: str, action_digest: Digest, result: re_pb2.ActionResult) -> None:
        await self._cache(self.instances.get(instance_name)).put(action_digest, result)

    async def store_blobs(self, instance_name: str, blobs: Mapping[Digest, bytes]) -> None:
        cas = self.instances.get(instance_name).cas
        missing = await cas.find_missing(list(blobs))
        if not missing:
            return
        failures = await cas.put_many({digest: blobs[digest] for digest in missing})
        if failures:
            digest, err = next(iter(failures.items()))
            raise err.with_context(f"storing output {digest}")
