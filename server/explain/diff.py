"""The difference between two actions, as a person reads it: changed arguments,
environment variables, platform properties and input files.

Input trees are walked from both roots at once; a subtree whose Directory digest
is the same on both sides is skipped unread, so the cost follows what changed,
not the size of the tree. Blobs no longer in the CAS are reported, not guessed.
"""

from __future__ import annotations

import difflib
import posixpath
from dataclasses import dataclass, field
from typing import Any

from cas.digest import Digest
from cas.store import BlobStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2

MAX_INPUT_CHANGES = 1000


@dataclass
class InputChange:
    path: str
    change: str  # "added", "removed", "changed", "became executable", ...
    before: str = ""  # hash/size, symlink target, or "directory"
    after: str = ""

    def describe(self) -> str:
        if self.change == "changed":
            return f"{self.path}: changed ({self.before} -> {self.after})"
        return f"{self.path}: {self.change}"


@dataclass
class ActionDiff:
    arguments: list[str] = field(default_factory=list)
    environment: list[str] = field(default_factory=list)
    platform: list[str] = field(default_factory=list)
    inputs: list[InputChange] = field(default_factory=list)
    other: list[str] = field(default_factory=list)  # timeout, working directory, outputs, ...
    unreadable: list[str] = field(default_factory=list)  # blobs gone from the CAS

    @property
    def empty(self) -> bool:
        return not (self.arguments or self.environment or self.platform or self.inputs or self.other)

    def to_json(self) -> dict[str, Any]:
        return {"arguments": self.arguments, "environment": self.environment, "platform": self.platform,
                "inputs": [vars(c) for c in self.inputs], "other": self.other, "unreadable": self.unreadable}


def argument_changes(before: list[str], after: list[str]) -> list[str]:
    out = []
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    for op, a1, a2, b1, b2 in matcher.get_opcodes():
        if op == "replace":
            for i in range(max(a2 - a1, b2 - b1)):
                old = before[a1 + i] if a1 + i < a2 else None
                new = after[b1 + i] if b1 + i < b2 else None
                if old is None:
                    out.append(f"argument {b1 + i}: added {new!r}")
                elif new is None:
                    out.append(f"argument {a1 + i}: removed {old!r}")
                else:
                    out.append(f"argument {b1 + i}: {old!r} -> {new!r}")
        elif op == "delete":
            out.extend(f"argument {a1 + i}: removed {before[a1 + i]!r}" for i in range(a2 - a1))
        elif op == "insert":
            out.extend(f"argument {b1 + i}: added {after[b1 + i]!r}" for i in range(b2 - b1))
    return out


def mapping_changes(kind: str, before: dict[str, str], after: dict[str, str]) -> list[str]:
    out = []
    for name in sorted(before.keys() | after.keys()):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        if old is None:
            out.append(f"{kind} {name}: added {new!r}")
        elif new is None:
            out.append(f"{kind} {name}: removed (was {old!r})")
        else:
            out.append(f"{kind} {name}: {old!r} -> {new!r}")
    return out


def _props(platform: re_pb2.Platform) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in platform.properties:
        out[p.name] = f"{out[p.name]},{p.value}" if p.name in out else p.value
    return out


def command_diff(before: re_pb2.Command, after: re_pb2.Command, diff: ActionDiff) -> None:
    diff.arguments = argument_changes(list(before.arguments), list(after.arguments))
    diff.environment = mapping_changes(
        "variable", {v.name: v.value for v in before.environment_variables},
        {v.name: v.value for v in after.environment_variables})
    diff.platform += mapping_changes("property", _props(before.platform), _props(after.platform))
    if before.working_directory != after.working_directory:
        diff.other.append(f"working directory: {before.working_directory!r} -> {after.working_directory!r}")


def action_fields_diff(before: re_pb2.Action, after: re_pb2.Action, diff: ActionDiff) -> None:
    diff.platform += mapping_changes("action property", _props(before.platform), _props(after.platform))
    if before.timeout != after.timeout:
        diff.other.append(f"timeout: {before.timeout.seconds}s -> {after.timeout.seconds}s")
    if before.do_not_cache != after.do_not_cache:
        diff.other.append(f"do_not_cache: {before.do_not_cache} -> {after.do_not_cache}")
    if before.salt != after.salt:
        diff.other.append("salt changed")


def _text(d: re_pb2.Digest) -> str:
    return f"{d.hash}/{d.size_bytes}"


async def tree_diff(cas: BlobStore, before: Digest, after: Digest, diff: ActionDiff) -> None:
    """Fill ``diff.inputs`` with the files that differ between two input roots."""
    function = after.function
    pending = [("", before, after)]
    while pending and len(diff.inputs) < MAX_INPUT_CHANGES:
        path, old_digest, new_digest = pending.pop()
        if old_digest == new_digest:
            continue
        found = await cas.get_many([old_digest, new_digest])
        dirs: list[re_pb2.Directory | None] = []
        for digest in (old_digest, new_digest):
            directory = re_pb2.Directory()
            if digest.size_bytes and digest not in found:
                diff.unreadable.append(f"directory {path or '/'} ({digest.hash}/{digest.size_bytes})")
                dirs.append(None)
                continue
            directory.ParseFromString(found.get(digest, b""))
            dirs.append(directory)
        old, new = dirs
        if old is None or new is None:
            continue
        old_files = {f.name: f for f in old.files}
        new_files = {f.name: f for f in new.files}
        for name in sorted(old_files.keys() | new_files.keys()):
            a, b = old_files.get(name), new_files.get(name)
            full = posixpath.join(path, name)
            if a is None:
                diff.inputs.append(InputChange(full, "added", "", _text(b.digest)))  # type: ignore[union-attr]
            elif b is None:
                diff.inputs.append(InputChange(full, "removed", _text(a.digest), ""))
            elif a.digest != b.digest:
                diff.inputs.append(InputChange(full, "changed", _text(a.digest), _text(b.digest)))
            elif a.is_executable != b.is_executable:
                diff.inputs.append(InputChange(full, "became executable" if b.is_executable else "lost its executable bit"))
        old_links = {s.name: s.target for s in old.symlinks}
        new_links = {s.name: s.target for s in new.symlinks}
        for name in sorted(old_links.keys() | new_links.keys()):
            if old_links.get(name) != new_links.get(name):
                diff.inputs.append(InputChange(posixpath.join(path, name), "symlink changed",
                                               old_links.get(name, ""), new_links.get(name, "")))
        old_dirs = {d.name: d.digest for d in old.directories}
        new_dirs = {d.name: d.digest for d in new.directories}
        for name in sorted(old_dirs.keys() | new_dirs.keys(), reverse=True):
            full = posixpath.join(path, name)
            a_dir, b_dir = old_dirs.get(name), new_dirs.get(name)
            if a_dir is None:
                diff.inputs.append(InputChange(full + "/", "added", "", "directory"))
            elif b_dir is None:
                diff.inputs.append(InputChange(full + "/", "removed", "directory", ""))
            elif a_dir != b_dir:
                pending.append((full, Digest.parse(a_dir.hash, a_dir.size_bytes, function),
                                Digest.parse(b_dir.hash, b_dir.size_bytes, function)))
    diff.inputs.sort(key=lambda c: c.path)
