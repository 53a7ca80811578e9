"""Is everything an index entry points at still in the CAS?

An entry is served only if its content is complete: the blob (or every Directory
and file under the root) and every blob and tree it references. The check uses
find_missing and reads, which also refresh the lifetimes of what they touch, so a
served asset stays alive in an LRU store for as long as clients keep fetching it.
Stores may still evict content early under pressure (the spec allows that); such
an entry is then a miss and, for a URL, is fetched from the origin again.
"""

from __future__ import annotations

from collections.abc import Iterable

from cas.digest import Digest
from cas.store import BlobStore
from cas.tree import TreeWalk, file_digests
from server.assets.index import BLOB, AssetEntry

# File digests checked per find_missing while walking a tree.
FIND_MISSING_BATCH = 10_000


async def tree_is_complete(cas: BlobStore, root: Digest) -> bool:
    """True if the Directory ``root`` and everything below it are in ``cas``."""
    walk = TreeWalk(cas, root)
    pending: set[Digest] = set()
    async for _, directory in walk.directories():
        pending |= file_digests([directory], root.function)
        if len(pending) >= FIND_MISSING_BATCH:
            if await cas.find_missing(pending):
                return False
            pending = set()
    if walk.missing:
        return False
    return not (pending and await cas.find_missing(pending))


async def trees_are_complete(cas: BlobStore, roots: Iterable[Digest]) -> bool:
    for root in roots:
        if not await tree_is_complete(cas, root):
            return False
    return True


async def entry_is_complete(cas: BlobStore, entry: AssetEntry) -> bool:
    blobs = list(entry.referenced_blobs)
    trees = list(entry.referenced_directories)
    (blobs if entry.kind == BLOB else trees).append(entry.digest)
    if blobs and await cas.find_missing(blobs):
        return False
    return await trees_are_complete(cas, trees)
