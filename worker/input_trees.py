"""InputTrees: subtrees of input roots, made once per Directory digest and mounted read-only.

Successive actions share most of their input trees (toolchains, sources, the
outputs of earlier actions), and a subtree is named by its Directory digest. With
bwrap, a subtree an action will not write into is made once, here, as hardlinks to
the FileCache's read-only files in directories that belong to the worker (mode
0555), and then bind-mounted read-only into every action that has it: 1,000
unchanged files cost one mount instead of 1,000 links, and removing the exec root
afterwards costs one empty directory instead of 1,000 unlinks.

Which subtrees (``mount_points``): those of at least ``MIN_MOUNT_ENTRIES`` entries
that hold no declared output, no output's parent and not the working directory (the
action writes there, and a mount is read-only: an action cannot create, delete or
change anything in a mounted subtree, nor chmod it; everywhere else the exec root is
as without mounts), outermost first, at most ``MAX_MOUNTS`` per action.

The trees live under ``work_dir/.trees`` in directories with random names (the
action user may pass through the work directory, never list it), are emptied with
the work directory when the worker starts, and are bounded by entries (hardlinks
and directories, least recently used out, never one an action is using). Their
files are links to cache files, so a tree keeps a file's blocks alive after the
FileCache evicts it: the tree cap bounds that, and a full disk empties the trees.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Collection, Iterable
from pathlib import Path

from cas.digest import Digest
from cas.lru import Lru
from worker.disk import in_memory, remove_tree
from worker.input_layout import InputLayout

MIN_MOUNT_ENTRIES = 8  # below this, links cost no more than a mount and a tree
MAX_MOUNTS = 64  # per action: bounds bwrap's command line and its mount work
DEFAULT_MAX_ENTRIES = 500_000


def mount_points(layout: InputLayout, keep_open: Collection[str], min_entries: int = MIN_MOUNT_ENTRIES,
                 max_mounts: int = MAX_MOUNTS) -> list[str]:
    """The subtrees to mount, outermost first: big enough, and not in ``keep_open``
    (every directory on the way to an output or to the working directory)."""
    chosen: list[str] = []
    under: set[str] = set()
    for path in layout.directories:  # parents first
        parent = path.rpartition("/")[0]
        if parent in under:
            under.add(path)
            continue
        if path in keep_open or layout.entries[path] < min_entries:
            continue
        chosen.append(path)
        under.add(path)
        if len(chosen) == max_mounts:
            break
    return chosen


def open_paths(paths: Iterable[str]) -> set[str]:
    """Every directory from the root to each of ``paths`` (relative to the exec root), themselves included."""
    out: set[str] = set()
    for path in paths:
        while path and path != "." and path not in out:
            out.add(path)
            path = path.rpartition("/")[0]
    return out


class InputTrees:
    """Materialised subtrees under ``root``, by Directory digest."""

    def __init__(self, root: Path, max_entries: int = DEFAULT_MAX_ENTRIES, in_memory: bool = False) -> None:
        self.root = root
        self.max_entries = max_entries
        # On a memory filesystem fetched files are written straight into a new tree (and
        # adopted by the cache later); on a disk into the cache's long-lived directories
        # first, then linked in (worker/input_placer.py).
        self.in_memory = in_memory
        self._trees: Lru[Digest, tuple[str, int]] = Lru(_entries)  # digest -> (path, entries)
        self._pins: dict[Digest, int] = {}
        self._building: dict[Digest, asyncio.Future[None]] = {}
        self._removals: set[asyncio.Task[None]] = set()
        self.made = 0  # counters for tests and metrics
        self.mounted = 0

    @classmethod
    def open(cls, root: Path, max_entries: int = DEFAULT_MAX_ENTRIES) -> InputTrees:
        """Under ``root``, which the action user may pass through, never list (blocking)."""
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o711)
        return cls(root, max_entries, in_memory(root))

    def __len__(self) -> int:
        return len(self._trees)

    @property
    def total_entries(self) -> int:
        return self._trees.total

    def path_of(self, digest: Digest) -> str | None:
        entry = self._trees.peek(digest)
        return None if entry is None else entry[0]

    async def claim(self, digests: Collection[Digest]) -> tuple[dict[Digest, str], dict[Digest, str]]:
        """Pin ``digests``: (those ready, by path; those the caller must build now, at
        the paths given, then ``built`` or ``failed``). Trees another action is building
        are awaited; if that build fails, the caller builds them itself."""
        self._pin(digests)
        ready: dict[Digest, str] = {}
        mine: dict[Digest, str] = {}
        pending = set(digests)
        try:
            while pending:
                waits = []
                for digest in list(pending):
                    entry = self._trees.get(digest)
                    if entry is not None:
                        ready[digest] = entry[0]
                        pending.discard(digest)
                    elif digest in self._building:
                        waits.append(self._building[digest])
                    else:
                        mine[digest] = str(self.root / uuid.uuid4().hex)
                        self._building[digest] = asyncio.get_running_loop().create_future()
                        pending.discard(digest)
                if waits:
                    await asyncio.gather(*waits)
        except BaseException:  # cancelled while waiting: nothing of ours may stay claimed
            for digest in mine:
                self._done_building(digest)
            self.release(digests)
            raise
        return ready, mine

    def built(self, digest: Digest, path: str, entries: int) -> None:
        """A tree the caller built (``claim``) is ready for every action."""
        self._trees.put(digest, (path, entries))
        self.made += 1
        self._done_building(digest)

    def failed(self, digest: Digest, path: str) -> None:
        """A build the caller claimed did not finish: its half-made tree goes."""
        self._done_building(digest)
        self._remove_later([path])

    def release(self, digests: Iterable[Digest]) -> None:
        """The action is over: unpin, and evict down to the cap."""
        for digest in digests:
            count = self._pins.pop(digest) - 1
            if count:
                self._pins[digest] = count
        self._evict(self.max_entries)

    def clear(self) -> int:
        """Remove every tree no action uses (a full disk); the entries removed."""
        return self._evict(0)

    async def drain(self) -> None:
        """Wait for removals in progress (tests, shutdown)."""
        while self._removals:
            await asyncio.gather(*list(self._removals), return_exceptions=True)

    def _done_building(self, digest: Digest) -> None:
        future = self._building.pop(digest, None)
        if future is not None and not future.done():
            future.set_result(None)

    def _pin(self, digests: Iterable[Digest]) -> None:
        for digest in digests:
            self._pins[digest] = self._pins.get(digest, 0) + 1

    def _evict(self, target: int) -> int:
        gone = self._trees.evict(target, lambda digest: digest not in self._pins)
        self._remove_later([path for _, (path, _) in gone])
        return sum(entries for _, (_, entries) in gone)

    def _remove_later(self, paths: list[str]) -> None:
        if not paths:
            return
        def remove_all() -> None:
            for path in paths:
                remove_tree(Path(path))

        async def remove() -> None:
            await asyncio.to_thread(remove_all)

        task = asyncio.get_running_loop().create_task(remove())
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)


def _entries(entry: tuple[str, int]) -> int:
    return entry[1]


def seal(path: str, layout: InputLayout) -> None:
    """Make a built tree's directories read-only, deepest first (blocking)."""
    for relative in reversed(layout.directories):
        os.chmod(os.path.join(path, relative), 0o555)
    os.chmod(path, 0o555)
