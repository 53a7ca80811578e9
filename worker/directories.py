"""DirectoryCache: parsed Directory protos by digest, fetched a tree level at a time.

Input roots of successive actions share most of their directories (toolchains,
sources), so parsed protos are kept in memory and a warm tree costs no round trip.
Directories the lease carried inline (docs/BOTS_PROTOCOL.md section 7) are taken
first. A tree whose root is still new comes with one GetTree call when the store
offers it (the first page of it, bounding the waste when most of a huge tree is
cached already); whatever is still missing costs one batched read per level of
depth. Every directory is checked against its digest, inline ones too: a Directory
is trusted to decide which files go where, so it must be exactly what the action named.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from google.protobuf.message import DecodeError

from cas.digest import Digest
from cas.errors import Internal, InvalidArgument, MissingBlobs, NotFound, ReapiError
from cas.lru import Lru
from cas.store import BlobStore
from cas.decorators.verify import verify_bytes
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2


@runtime_checkable
class TreeSource(Protocol):
    """A store that can return a whole tree in one call (RemoteStore: GetTree)."""

    async def get_tree(self, root: Digest, page_size: int = ...) -> tuple[list[re_pb2.Directory], bool]: ...


def child_directory_digests(directory: re_pb2.Directory, function: int) -> list[Digest]:
    return [Digest.from_proto(node.digest, function) for node in directory.directories]


class DirectoryCache:
    """An LRU of Directory protos (and their children's digests), holding at most ``max_entries``."""

    def __init__(self, max_entries: int = 100_000, tree_page_size: int = 1000) -> None:
        self.max_entries = max_entries
        self.tree_page_size = tree_page_size
        self._entries: Lru[Digest, re_pb2.Directory] = Lru()  # by entries
        # Child digests, validated once per directory rather than at every walk through it.
        self._children: dict[Digest, tuple[Digest, ...]] = {}
        self.fetched = 0
        self.prefetched = 0
        self.inlined = 0

    def __len__(self) -> int:
        return len(self._entries)

    def has(self, digest: Digest) -> bool:
        return digest in self._entries

    async def tree(
        self, root: Digest, source: BlobStore, inline: Mapping[Digest, bytes] | None = None
    ) -> dict[Digest, re_pb2.Directory]:
        """Every directory reachable from ``root``; MissingBlobs names absent ones.
        ``inline``: blobs the lease carried (Directories among them are taken by digest)."""
        inline = inline or {}
        if isinstance(source, TreeSource) and root not in self._entries and root not in inline:
            await self._prefetch(root, source)
        out: dict[Digest, re_pb2.Directory] = {}
        level = [root]
        while level:
            missing = []
            for digest in level:
                cached = self._entries.get(digest)
                if cached is None and digest in inline:
                    cached = self._take_inline(digest, inline[digest])
                if cached is None:
                    missing.append(digest)
                else:
                    out[digest] = cached
            if missing:
                out.update(await self._fetch(missing, source))
            next_level: dict[Digest, None] = {}
            for digest in level:
                for child in self._child_digests(digest, out[digest]):
                    if child not in out:
                        next_level[child] = None
            level = list(next_level)
        self._trim()
        return out

    def _child_digests(self, digest: Digest, directory: re_pb2.Directory) -> tuple[Digest, ...]:
        children = self._children.get(digest)
        if children is None:
            children = tuple(child_directory_digests(directory, digest.function))
            self._children[digest] = children
        return children

    def _take_inline(self, digest: Digest, data: bytes) -> re_pb2.Directory | None:
        """A Directory the lease carried; None if it does not match its digest or
        does not parse (then it is read from the CAS, which has the last word)."""
        try:
            directory = self._store(digest, data)
        except ReapiError:
            return None
        self.inlined += 1
        return directory

    async def _prefetch(self, root: Digest, source: TreeSource) -> None:
        """One GetTree instead of a batch read per level; the walk then finds them cached.

        Each directory is keyed by the hash of its serialisation, so one the server
        serialised differently is simply not found, and is read by digest as usual.
        """
        try:
            directories, _ = await source.get_tree(root, self.tree_page_size)
        except NotFound:
            return  # the walk reports exactly what is missing
        for directory in directories:
            digest = Digest.of(directory.SerializeToString(deterministic=True), root.function)
            self._entries.put(digest, directory)
        self.prefetched += len(directories)
        self._trim()

    async def _fetch(self, digests: list[Digest], source: BlobStore) -> Mapping[Digest, re_pb2.Directory]:
        found = await source.get_many(digests)
        absent = [d for d in digests if d not in found]
        if absent:
            raise MissingBlobs(absent, "input directories")
        parsed = {digest: self._store(digest, found[digest]) for digest in digests}
        self.fetched += len(parsed)
        self._trim()
        return parsed

    def _store(self, digest: Digest, data: bytes) -> re_pb2.Directory:
        try:
            verify_bytes(digest, data)
        except ReapiError as err:
            raise Internal(f"the CAS returned corrupt content for input directory {digest}: {err.message}") from None
        directory = re_pb2.Directory()
        try:
            directory.ParseFromString(data)
        except DecodeError:
            raise InvalidArgument(f"input directory {digest} is not a valid Directory message") from None
        self._entries.put(digest, directory)
        return directory

    def _trim(self) -> None:
        for digest, _ in self._entries.evict(self.max_entries):
            self._children.pop(digest, None)
