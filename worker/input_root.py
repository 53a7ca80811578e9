"""Input roots: an action's input tree, checked, then built as a fresh exec root.

The tree is checked as a whole first (worker/input_layout.py: ``plan_layout``);
nothing is touched until the whole plan is accepted.

``InputRootBuilder.prepare`` fetches what the local FileCache lacks and creates the
exec root (worker/input_placer.py): directories while the first blobs are on the
wire, each fetched batch placed as it arrives, written once (and taken into the
cache), then links (or copies) of what was cached already and the symlinks, in
blocking jobs on threads. A link shares the cache file's inode, so it is used only
where the action cannot write through it (``Placement``, decided by the sandbox: the
action runs as another user than the cache's owner, and not as root); everywhere
else inputs are copies (written from memory when just fetched, else with
``copy_file_range``, which shares blocks on filesystems that can). Where the
sandbox can mount (bwrap), subtrees the action will not write into come from the
worker's InputTrees instead (worker/input_trees.py): made once per Directory digest,
mounted read-only, so an unchanged subtree costs one mount, not a link per file.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from itertools import chain, islice
from operator import itemgetter
from pathlib import Path

from cas.digest import Digest
from cas.lru import Lru
from cas.store import BlobStore
from worker.directories import DirectoryCache
from worker.file_cache import BATCH_BLOBS, FileCache
from worker.input_layout import InputLayout, check_name, plan_layout, resolve_inside
from worker.input_placer import InputPlacer, Target
from worker.input_trees import InputTrees, mount_points, seal
from worker.read_ahead import ReadAheadHandle

__all__ = ["InputLayout", "InputRootBuilder", "LINKS", "Mount", "Placement", "check_name", "plan_layout",
           "resolve_inside"]

_CACHE_KEY = itemgetter(0, 1)  # (digest, executable) of a layout's file entry, in C
READ_AHEAD_SCAN = 4 * BATCH_BLOBS  # files looked at for a read ahead: bounded whatever the tree's size


@dataclass(frozen=True)
class Placement:
    """How input files go into an exec root."""

    copy: bool = False  # copies instead of links to the cache
    owner: tuple[int, int] | None = None  # (uid, gid) that must own the exec root's directories
    mounts: bool = False  # the sandbox mounts read-only subtrees (InputTrees) into the exec root


LINKS = Placement()


@dataclass(frozen=True)
class Mount:
    """A read-only subtree mounted at ``path`` (relative to the exec root) from ``source``."""

    path: str
    source: str


class InputRootBuilder:
    """Builds exec roots from input root digests, through the shared caches."""

    def __init__(self, files: FileCache, directories: DirectoryCache, max_cached_layouts: int = 256,
                 trees: InputTrees | None = None, min_mounted_entries: int = 256) -> None:
        self.files = files
        self.directories = directories
        self.trees = trees  # None: no mounted subtrees, whatever the placement says
        # Mounting needs a new sandbox (bwrap takes its mounts when it starts), not the one
        # made ready beforehand (worker/sandbox/warm.py), which saves its 3-7 ms start: a
        # few hundred links cost less than that (docs/BENCHMARKS.md, "Input fetch").
        self.min_mounted_entries = min_mounted_entries
        # Repeated input roots (the same action retried, tests run again) skip planning.
        self._layouts: Lru[Digest, InputLayout] = Lru()  # by entries
        self._max_layouts = max_cached_layouts

    async def layout(self, root: Digest, source: BlobStore, inline: Mapping[Digest, bytes] | None = None) -> InputLayout:
        """The checked layout of the tree under ``root``; ``inline``: Directories the lease carried."""
        cached = self._layouts.get(root)
        if cached is not None:
            return cached
        tree = await self.directories.tree(root, source, inline)
        layout = plan_layout(root, tree)
        self._layouts.put(root, layout)
        self._layouts.evict(self._max_layouts)
        return layout

    async def build(self, root: Digest, exec_root: Path, source: BlobStore, placement: Placement = LINKS) -> InputLayout:
        """Fetch and check the tree, then create it at ``exec_root`` (which must not exist yet),
        every file in place (no mounts)."""
        layout = await self.layout(root, source)
        async with self.prepare(root, exec_root, source, placement, keep_open=None):
            pass
        return layout

    async def mount_cut(self, root: Digest, source: BlobStore, placement: Placement,
                        keep_open: Collection[str]) -> list[str]:
        """The subtrees ``prepare`` will mount for this tree (none: every file goes in the exec root)."""
        return self._cut(await self.layout(root, source), placement, keep_open)

    def read_ahead(self, root: Digest, source: BlobStore, placement: Placement,
                   keep_open: Collection[str], carried: Mapping[Digest, bytes] | None = None) -> ReadAheadHandle:
        """Start reading the blobs ``prepare`` will fetch (a tree planned by ``layout``
        already), while the sandbox starts and the exec root is planned
        (worker/read_ahead.py), or take them from ``carried`` (the lease brought them);
        close the handle once the exec root is made."""
        layout = self._layouts.peek(root)
        if layout is None:
            return self.files.read_ahead_for([], source)
        trees = self.trees
        cut = self._cut(layout, placement, keep_open)
        if trees is not None and cut:  # subtrees made already are mounted: none of their files is read
            layout = layout.without([path for path in cut if trees.path_of(layout.digests[path]) is not None])
        # One batch is read ahead: the first few batches' worth of files are enough to choose it from.
        return self.files.read_ahead_for(list(map(_CACHE_KEY, islice(layout.files, READ_AHEAD_SCAN))), source, carried)

    def _cut(self, layout: InputLayout, placement: Placement, keep_open: Collection[str] | None) -> list[str]:
        """Mount points, when mounting pays: they hold ``min_mounted_entries`` entries in all.
        Fewer are linked in less time than a new sandbox starts instead of the one made ready."""
        if not placement.mounts or self.trees is None or keep_open is None:
            return []
        cut = mount_points(layout, keep_open)
        return cut if sum(layout.entries[path] for path in cut) >= self.min_mounted_entries else []

    @asynccontextmanager
    async def prepare(self, root: Digest, exec_root: Path, source: BlobStore, placement: Placement = LINKS,
                      keep_open: Collection[str] | None = None, then: Callable[[], None] | None = None,
                      adopt_after: asyncio.Event | None = None) -> AsyncIterator[list[Mount]]:
        """Create the exec root at ``exec_root``; inside the block, the subtrees to mount
        there (only with ``placement.mounts``, InputTrees and a ``keep_open``: the
        directories the action must be able to write in) stay made and are not evicted.
        ``then`` runs in the thread job that finishes the exec root (blocking; e.g. the
        outputs' parents). Files written in place are taken into the cache once
        ``adopt_after`` is set (the action's inputs are in place: off the input path;
        the caller must set it, also when the action fails), else at once."""
        layout = await self.layout(root, source)
        cut = self._cut(layout, placement, keep_open)
        if not cut:
            await self._place([Target(str(exec_root), layout, placement.copy, placement.owner)], source, then,
                              adopt_after)
            yield []
            return
        assert self.trees is not None
        trees = self.trees
        digests = {layout.digests[path] for path in cut}
        ready, mine = await trees.claim(digests)
        try:
            await self._place_with_trees(layout, cut, mine, exec_root, source, placement, then, adopt_after)
            trees.mounted += len(cut)
            paths = {**ready, **mine}
            yield [Mount(path, paths[layout.digests[path]]) for path in cut]
        finally:
            trees.release(digests)

    async def _place(self, targets: list[Target], source: BlobStore, then: Callable[[], None] | None = None,
                     adopt_after: asyncio.Event | None = None) -> None:
        """Fetch what the cache lacks and create ``targets`` from it: files fetched now are
        placed as each batch is written; the rest (cached already) after the fetch, then
        ``then`` in the same thread job."""
        placer = InputPlacer(targets, self.files.path_of, self.files.tmp_dir)
        keys = set(chain.from_iterable(map(_CACHE_KEY, target.layout.files) for target in targets))

        def finish() -> None:
            placer.finish()
            if then is not None:
                then()

        try:
            async with self.files.pinned(keys, source, placer):
                if placer.started:  # directories made while the blobs were on the wire
                    await placer.ready()
                await asyncio.to_thread(finish)
        finally:
            await placer.close()
            self.files.adopt_later(placer.deferred, adopt_after)

    async def _place_with_trees(self, layout: InputLayout, cut: list[str], mine: dict[Digest, str],
                                exec_root: Path, source: BlobStore, placement: Placement,
                                then: Callable[[], None] | None, adopt_after: asyncio.Event | None) -> None:
        """The exec root without the cut subtrees, and the trees this action builds, from one fetch."""
        assert self.trees is not None
        targets = [Target(str(exec_root), layout.without(cut), placement.copy, placement.owner)]
        subtrees: dict[Digest, InputLayout] = {}
        for path in cut:  # the same subtree may appear at several paths: built once
            digest = layout.digests[path]
            if digest in mine and digest not in subtrees:
                subtrees[digest] = layout.subtree(path)
                targets.append(Target(mine[digest], subtrees[digest], in_place=self.trees.in_memory))
        try:
            built = [(mine[digest], subtree) for digest, subtree in subtrees.items()]

            def seal_then() -> None:
                _seal_all(built)
                if then is not None:
                    then()

            await self._place(targets, source, seal_then, adopt_after)
        except BaseException:
            for digest, path in mine.items():
                self.trees.failed(digest, path)
            raise
        for digest, subtree in subtrees.items():
            self.trees.built(digest, mine[digest], len(subtree.files) + len(subtree.symlinks)
                             + len(subtree.directories) + 1)


def _seal_all(trees: list[tuple[str, InputLayout]]) -> None:
    """Make built trees read-only (blocking)."""
    for path, layout in trees:
        seal(path, layout)
