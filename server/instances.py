"""Instance names and what serves them.

Each configured instance names its stores. The name "*" is a wildcard: it serves any
instance name the client sends (the zero-config server uses it, so
``--remote_instance_name=some/instance`` just works). An unknown name is
INVALID_ARGUMENT, never NOT_FOUND: to an action cache client NOT_FOUND means a miss.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

from cas.ac.action_cache import ActionCache
from cas.errors import InvalidArgument
from cas.store import BlobStore
from server.config import WILDCARD_INSTANCE, InstanceConfig


@dataclass
class Instance:
    config: InstanceConfig
    cas: BlobStore
    ac: BlobStore

    @property
    def name(self) -> str:
        return self.config.name

    @cached_property
    def action_cache(self) -> ActionCache:
        """Results over this instance's AC and CAS (the AC service and Execute share it)."""
        return ActionCache(self.ac, self.cas, check_completeness=self.config.ac_completeness_check)


class InstanceRegistry:
    def __init__(self, instances: Iterable[Instance]) -> None:
        self._by_name = {i.name: i for i in instances}
        self._wildcard = self._by_name.pop(WILDCARD_INSTANCE, None)

    @classmethod
    def from_config(cls, configs: Iterable[InstanceConfig], stores: Mapping[str, BlobStore]) -> InstanceRegistry:
        return cls(Instance(config=c, cas=stores[c.cas], ac=stores[c.ac]) for c in configs)

    def get(self, name: str) -> Instance:
        instance = self._by_name.get(name)
        if instance is not None:
            return instance
        if self._wildcard is not None:
            return self._wildcard
        known = ", ".join(repr(n) for n in sorted(self._by_name)) or "none"
        raise InvalidArgument(f"unknown instance name {name!r} (this server serves: {known})")

    def all(self) -> list[Instance]:
        return list(self._by_name.values()) + ([self._wildcard] if self._wildcard else [])
