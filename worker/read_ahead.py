"""ReadAhead: an action's small input blobs asked for as soon as its input tree is known.

Why: between reading a cold input tree and the FileCache's fetch a worker spent about
3 ms of Python on the event loop (the sandbox's scratch directory, claiming the trees
to mount, pinning the cache keys, deciding what is absent) before its BatchReadBlobs
left. Started right after the tree is planned, the read is on the wire meanwhile,
and the FileCache takes its answer (``take``) instead of asking again.

Small input files the lease carried (docs/BOTS_PROTOCOL.md section 7, "Input files")
are taken the same way, as a read already answered: no task, no call, and the fetch
that takes them writes them at once (``at_hand``).

A read ahead is only a read: it writes nothing and indexes nothing, so whatever
takes its answer verifies every blob as any fetch does. The FileCache's own rules
(which lease fetches a blob, who waits for whom) are unchanged: a digest already
read ahead is not read again by another action's read ahead, and whichever fetch
gets to it first takes it. What no fetch took is dropped when the action that
started the read is past its input fetch (``ReadAheadHandle.close``). It covers one
batch at most (``max_bytes``, ``max_blobs``), so the memory it holds is bounded as
one batched fetch's is (what a lease carried, by the inline limit, and the lease
holds it anyway).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from itertools import repeat
from operator import itemgetter

from cas.digest import Digest
from cas.store import BlobStore

_SIZE = itemgetter(1)  # Digest.size_bytes


Reading = asyncio.Future[dict[Digest, bytes]]


class ReadAheadHandle:
    """One action's read ahead; ``close`` drops what no fetch took (idempotent)."""

    def __init__(self, owner: ReadAhead, reads: list[tuple[Reading, list[Digest]]]) -> None:
        self._owner = owner
        self._reads = reads

    def close(self) -> None:
        for task, digests in self._reads:
            self._owner._drop(task, digests)
        self._reads = []


class ReadAhead:
    """Reads in flight for blobs no fetch has asked for yet, by digest."""

    def __init__(self, max_bytes: int, max_blobs: int) -> None:
        self.max_bytes = max_bytes
        self.max_blobs = max_blobs
        self._reading: dict[Digest, Reading] = {}
        self.started = 0  # reads started, for tests and metrics
        self.carried = 0  # blobs taken from what leases carried

    def start(self, digests: Iterable[Digest], source: BlobStore,
              carried: Mapping[Digest, bytes] | None = None) -> ReadAheadHandle:
        """Read ``digests`` (absent from the cache, small: the caller chose them), the
        smallest first, up to one batch; those read ahead already are left out. Those
        ``carried`` (the lease brought them, unverified as any read) are taken from
        there at once, whatever their number."""
        reading = self._reading
        wanted = sorted((d for d in digests if d not in reading), key=_SIZE) if reading else sorted(digests, key=_SIZE)
        reads: list[tuple[Reading, list[Digest]]] = []
        if carried:
            found = {d: data for d in wanted if (data := carried.get(d)) is not None}
            if found:
                brought: Reading = asyncio.get_running_loop().create_future()
                brought.set_result(found)
                reading.update(dict.fromkeys(found, brought))
                reads.append((brought, list(found)))
                self.carried += len(found)
                wanted = [d for d in wanted if d not in found] if len(found) < len(wanted) else []
        del wanted[self.max_blobs:]
        total = 0
        for index, digest in enumerate(wanted):
            total += digest.size_bytes
            if total > self.max_bytes:
                del wanted[max(index, 1):]
                break
        if wanted:
            task = asyncio.ensure_future(source.get_many(wanted))
            task.add_done_callback(_retrieved)
            reading.update(dict.fromkeys(wanted, task))
            reads.append((task, wanted))
            self.started += 1
        return ReadAheadHandle(self, reads)

    def take(self, digests: list[Digest]) -> tuple[list[Digest], set[Reading]]:
        """Of ``digests``: those no read ahead covers, and the reads covering the others
        (now this caller's: no one else takes them)."""
        reading = self._reading
        if not reading:
            return digests, set()
        popped = list(map(reading.pop, digests, repeat(None)))  # one C-level pass for a thousand
        tasks = set(popped)
        if None not in tasks:
            return [], tasks  # type: ignore[return-value]
        tasks.discard(None)
        return [digest for digest, task in zip(digests, popped) if task is None], tasks  # type: ignore[return-value]

    def _drop(self, task: Reading, digests: list[Digest]) -> None:
        reading = self._reading
        if not reading:  # every read taken (the usual: the fetch took them all)
            return
        for digest in digests:
            if reading.get(digest) is task:
                del reading[digest]


async def read_with(source: BlobStore, digests: list[Digest],
                    ahead: set[Reading]) -> dict[Digest, bytes]:
    """The blobs of reads ahead and of a new read for ``digests`` (none if empty), in
    one dict (it may hold blobs others asked for too). A read ahead may serve several
    fetches: cancelling this one leaves it to the others."""
    parts = await asyncio.gather(*map(asyncio.shield, ahead), *([source.get_many(digests)] if digests else []))
    if len(parts) == 1:
        return parts[0]
    found: dict[Digest, bytes] = {}
    for part in parts:
        found.update(part)
    return found


def at_hand(rest: list[Digest], ahead: set[Reading]) -> dict[Digest, bytes] | None:
    """The blobs of reads ahead that are all done (what a lease carried is), when no other
    read is needed; None otherwise (``read_with`` then, which waits for them)."""
    if rest or not ahead or not all(read.done() and not read.cancelled() and read.exception() is None
                                    for read in ahead):
        return None
    if len(ahead) == 1:
        return next(iter(ahead)).result()
    found: dict[Digest, bytes] = {}
    for read in ahead:
        found.update(read.result())
    return found


def _retrieved(task: Reading) -> None:
    """A read ahead nobody took may fail (the fetch that reads again reports it): not logged."""
    if not task.cancelled():
        task.exception()
