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
    kind: str  # "target" (with the outputs) or "outputs"
    identity: tuple[str, ...]

    def describe(self) -> str:
        if self.kind == "target":
            target, mnemonic, configuration, *outputs = self.identity
            parts = [f"target {target}"] + ([f"mnemonic {mnemonic}"] if mnemonic else []) + (
                [f"configuration {configuration}"] if configuration else [])
            return "the same " + ", ".join(parts) + " and output paths: " + ", ".join(outputs)
        return "the same output paths: " + ", ".join(self.identity)


class Execution(NamedTuple):
    operation: str
    action_digest: Digest
    key: ProducerKey
    at: float
    previous: Digest | None  # the most recent earlier, different action for the same key
    client: str  # tool and invocation, when sent


def producer_keys(instance_name: str, command: re_pb2.Command,
                  metadata: re_pb2.RequestMetadata | None) -> list[ProducerKey]:
    """The keys of what this action produces, most precise first.

    A target has several actions of one mnemonic (a library's compiles), so the
    target's key includes the output paths too; the output paths alone are the
    fallback, for clients that send no target and for a changed configuration
    (a new --copt gives a new configuration id, not new output paths)."""
    outputs = tuple(sorted(list(command.output_paths) or [*command.output_files, *command.output_directories]))
    keys = []
    if metadata is not None and metadata.target_id:
        keys.append(ProducerKey(instance_name, "target", (
            metadata.target_id, metadata.action_mnemonic, metadata.configuration_id, *outputs)))
    keys.append(ProducerKey(instance_name, "outputs", outputs))
    return keys


class ActionHistory:
    def __init__(self, max_keys: int = 100_000, max_operations: int = 100_000) -> None:
        self.max_keys = max_keys
        self.max_operations = max_operations
        self._last: OrderedDict[ProducerKey, Digest] = OrderedDict()
        self._operations: OrderedDict[str, Execution] = OrderedDict()

    def record(self, operation: str, action_digest: Digest, keys: list[ProducerKey], client: str = "") -> Execution:
        """Remember the execution under each key; its ``previous`` is found under the
        most precise key that has an earlier, different action."""
        found: tuple[ProducerKey, Digest | None] = (keys[0], None)
        for key in keys:
            previous = self._last.get(key)
            if previous == action_digest:  # the same action again (its result was not cached)
                previous = self._find_previous(key, action_digest)
            if previous is not None:
                found = (key, previous)
                break
        entry = Execution(operation, action_digest, found[0], time.time(), found[1], client)
        for key in keys:
            if key.identity and key.identity[-1:] != ("",):  # no outputs: nothing to compare with later
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
