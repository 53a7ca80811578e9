"""Which actions were executed for each thing produced, most recent last.

Recorded by Execute for every action it queues (a cache miss, or a client that
skipped the lookup). Bounded: at most ``max_keys`` things and ``max_operations``
operation names are remembered, least recently used dropped first.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import NamedTuple

from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2


class ProducerKey(NamedTuple):
    instance_name: str
    kind: str  # "target" or "outputs"
    identity: tuple[str, ...]

    def describe(self) -> str:
        if self.kind == "target":
            target, mnemonic, configuration = self.identity
            parts = [f"target {target}"] + ([f"mnemonic {mnemonic}"] if mnemonic else []) + (
                [f"configuration {configuration}"] if configuration else [])
            return "the same " + ", ".join(parts)
        return "the same output paths: " + ", ".join(self.identity)


class Execution(NamedTuple):
    operation: str
    action_digest: Digest
    key: ProducerKey
    at: float
    previous: Digest | None  # the most recent earlier, different action for the same key
    client: str  # tool and invocation, when sent


def producer_key(instance_name: str, command: re_pb2.Command,
                 metadata: re_pb2.RequestMetadata | None) -> ProducerKey:
    if metadata is not None and metadata.target_id:
        return ProducerKey(instance_name, "target",
                           (metadata.target_id, metadata.action_mnemonic, metadata.configuration_id))
    outputs = list(command.output_paths) or [*command.output_files, *command.output_directories]
    return ProducerKey(instance_name, "outputs", tuple(sorted(outputs)))


class ActionHistory:
    def __init__(self, max_keys: int = 100_000, max_operations: int = 100_000) -> None:
        self.max_keys = max_keys
        self.max_operations = max_operations
        self._last: OrderedDict[ProducerKey, Digest] = OrderedDict()
        self._operations: OrderedDict[str, Execution] = OrderedDict()

    def record(self, operation: str, action_digest: Digest, key: ProducerKey, client: str = "") -> Execution:
        previous = self._last.get(key)
        if previous == action_digest:  # the same action again (its result was not cached)
            earlier = self._find_previous(key, action_digest)
            previous = earlier
        entry = Execution(operation, action_digest, key, time.time(), previous, client)
        if key.identity:  # an action with no outputs produces nothing to compare with
            self._last[key] = action_digest
            self._last.move_to_end(key)
            if len(self._last) > self.max_keys:
                self._last.popitem(last=False)
        self._operations[operation] = entry
        if len(self._operations) > self.max_operations:
            self._operations.popitem(last=False)
        return entry

    def _find_previous(self, key: ProducerKey, digest: Digest) -> Digest | None:
        for entry in reversed(self._operations.values()):
            if entry.key == key and entry.action_digest == digest:
                return entry.previous
        return None

    def get(self, operation: str) -> Execution | None:
        return self._operations.get(operation)

    def latest_for_action(self, action_digest: Digest) -> Execution | None:
        for entry in reversed(self._operations.values()):
            if entry.action_digest == action_digest:
                return entry
        return None
