"""An executed action explained against the most recent earlier action that produced
the same thing: the console's ``/explain/NAME`` and the ``/api/explain/NAME`` JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from cas.digest import Digest
from cas.store import BlobStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.explain.diff import ActionDiff, action_fields_diff, command_diff, tree_diff
from server.explain.history import ActionHistory
from server.instances import InstanceRegistry


@dataclass
class Explanation:
    operation: str
    action_digest: Digest
    matched_by: str
    previous: Digest | None
    diff: ActionDiff | None
    note: str = ""
    client: str = ""  # the tool and invocation that asked, from RequestMetadata

    def to_json(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "action_digest": f"{self.action_digest.hash}/{self.action_digest.size_bytes}",
            "matched_by": self.matched_by,
            "previous_action_digest": f"{self.previous.hash}/{self.previous.size_bytes}" if self.previous else None,
            "changes": self.diff.to_json() if self.diff is not None else None,
            "note": self.note,
            "client": self.client,
        }


async def _read(cas: BlobStore, digest: Digest, message: re_pb2.Action | re_pb2.Command) -> bool:
    data = await cas.get_or_none(digest)
    if data is None:
        return False
    try:
        message.ParseFromString(data)
    except DecodeError:
        return False
    return True


async def diff_actions(cas: BlobStore, before_digest: Digest, after_digest: Digest) -> ActionDiff | str:
    """The changes from one action to the other, or why they cannot be compared."""
    before, after = re_pb2.Action(), re_pb2.Action()
    if not await _read(cas, before_digest, before):
        return f"the earlier action {before_digest} is no longer in the CAS"
    if not await _read(cas, after_digest, after):
        return f"the action {after_digest} is no longer in the CAS"
    function = after_digest.function
    diff = ActionDiff()
    action_fields_diff(before, after, diff)
    old_command, new_command = re_pb2.Command(), re_pb2.Command()
    old_cd = Digest.parse(before.command_digest.hash, before.command_digest.size_bytes, function)
    new_cd = Digest.parse(after.command_digest.hash, after.command_digest.size_bytes, function)
    if old_cd != new_cd:
        if await _read(cas, old_cd, old_command) and await _read(cas, new_cd, new_command):
            command_diff(old_command, new_command, diff)
        else:
            diff.unreadable.append("a Command")
    await tree_diff(cas, Digest.parse(before.input_root_digest.hash, before.input_root_digest.size_bytes, function),
                    Digest.parse(after.input_root_digest.hash, after.input_root_digest.size_bytes, function), diff)
    return diff


async def explain(history: ActionHistory, instances: InstanceRegistry, operation: str) -> Explanation | None:
    """None if the operation never executed here (a cache hit, or forgotten)."""
    entry = history.get(operation)
    if entry is None:
        return None
    matched_by = entry.key.describe()
    if entry.previous is None:
        return Explanation(operation, entry.action_digest, matched_by, None, None,
                           "no earlier action produced the same thing on this server (a first build, "
                           "or one older than the server's memory)", entry.client)
    cas = instances.get(entry.key.instance_name).cas
    diff = await diff_actions(cas, entry.previous, entry.action_digest)
    if isinstance(diff, str):
        return Explanation(operation, entry.action_digest, matched_by, entry.previous, None, diff, entry.client)
    note = "" if not diff.empty else "the two actions differ only in what this page does not compare"
    return Explanation(operation, entry.action_digest, matched_by, entry.previous, diff, note, entry.client)
