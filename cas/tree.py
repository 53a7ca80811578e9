"""Directory trees in the CAS: walking them and listing what they reference.

A tree is a root ``Directory`` message whose ``directories`` entries name child
Directory messages by digest, all stored as blobs. GetTree streams every Directory
below a root; the action cache checks that every file an output directory names
still exists. Both walk breadth-first, one ``get_many`` per level (per batch of
``BATCH`` directories), so a tree of N levels costs about N store round trips, not
one per directory.

Children use the digest function of their root: a tree never mixes functions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from cas.digest import Digest, digests_from_protos
from cas.errors import InvalidArgument
from cas.store import BlobStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2

# Directories fetched per get_many: bounds the memory one step of a walk holds.
BATCH = 1000


def parse_directory(digest: Digest, data: bytes) -> re_pb2.Directory:
    """The Directory in ``data``; INVALID_ARGUMENT naming the blob if it is not one."""
    directory = re_pb2.Directory()
    try:
        directory.ParseFromString(data)
    except DecodeError as exc:
        raise InvalidArgument(f"blob {digest} is not a Directory message: {exc}") from None
    return directory


def parse_tree(digest: Digest, data: bytes) -> re_pb2.Tree:
    """The Tree in ``data``; INVALID_ARGUMENT naming the blob if it is not one."""
    tree = re_pb2.Tree()
    try:
        tree.ParseFromString(data)
    except DecodeError as exc:
        raise InvalidArgument(f"blob {digest} is not a Tree message: {exc}") from None
    return tree


def child_directories(directory: re_pb2.Directory, function: int, where: Digest | None = None) -> list[Digest]:
    """Digests of the subdirectories ``directory`` names."""
    try:
        return digests_from_protos((node.digest for node in directory.directories), function)
    except InvalidArgument as err:
        raise err.with_context(f"directory {where}" if where else "directory") from None


def file_digests(directories: Iterable[re_pb2.Directory], function: int) -> set[Digest]:
    """Digests of every file in ``directories`` (not recursive: pass them all)."""
    out: set[Digest] = set()
    for directory in directories:
        if directory.files:
            out.update(digests_from_protos((node.digest for node in directory.files), function))
    return out


def tree_file_digests(tree: re_pb2.Tree, function: int) -> set[Digest]:
    """Every file digest a Tree message references, root and children alike."""
    return file_digests([tree.root, *tree.children], function)


@dataclass
class TreeWalk:
    """A breadth-first walk from ``root`` that records the directories it could not find.

    ``missing`` fills in as the walk proceeds: a missing directory is skipped with its
    whole subtree, which is how GetTree returns the part of a tree that is present.
    """

    cas: BlobStore
    root: Digest
    missing: set[Digest] = field(default_factory=set)

    async def directories(self, skip: int = 0) -> AsyncIterator[tuple[Digest, re_pb2.Directory]]:
        """Each distinct Directory once, in a deterministic order; the first ``skip`` are not yielded."""
        seen = {self.root}
        level = [self.root]
        position = 0
        while level:
            next_level: list[Digest] = []
            for start in range(0, len(level), BATCH):
                batch = level[start : start + BATCH]
                found = await self.cas.get_many(batch)
                for digest in batch:
                    data = found.get(digest)
                    if data is None:
                        self.missing.add(digest)
                        continue
                    directory = parse_directory(digest, data)
                    for child in child_directories(directory, self.root.function, digest):
                        if child not in seen:
                            seen.add(child)
                            next_level.append(child)
                    if position >= skip:
                        yield digest, directory
                    position += 1
            level = next_level
