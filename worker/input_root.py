"""Input roots: an action's input tree, checked, then built as a fresh exec root.

The tree is checked as a whole first (worker/input_layout.py: ``plan_layout``);
nothing is touched until the whole plan is accepted.

``InputRootBuilder.prepare`` fetches what the local FileCache lacks, then creates the
directories, links (or copies) the files and makes the symlinks in blocking jobs on
threads. A link shares the cache file's inode, so it is used only where the action
cannot write through it (``Placement``, decided by the sandbox: the action runs as
another user than the cache's owner, and not as root); everywhere else inputs are
copies (``copy_file_range``, which shares blocks on filesystems that can). Where the
sandbox can mount (bwrap), subtrees the action will not write into come from the
worker's InputTrees instead (worker/input_trees.py): made once per Directory digest,
mounted read-only, so an unchanged subtree costs one mount, not a link per file.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from cas.digest import Digest
from cas.lru import Lru
from cas.store import BlobStore
from worker.cache_files import link_or_copy
from worker.directories import DirectoryCache
from worker.file_cache import FileCache
from worker.input_layout import InputLayout, check_name, plan_layout, resolve_inside
from worker.input_trees import InputTrees, mount_points, seal

__all__ = ["InputLayout", "InputRootBuilder", "LINKS", "Mount", "Placement", "check_name", "plan_layout",
           "resolve_inside"]

_MODES = {False: 0o444, True: 0o555}


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


def copy_at(source_name: str, source_dir: int, name: str, dir_fd: int, executable: bool) -> None:
    """Copy one file between two open directories (blocking)."""
    source = os.open(source_name, os.O_RDONLY, dir_fd=source_dir)
    try:
        target = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _MODES[executable], dir_fd=dir_fd)
        try:
            left = os.fstat(source).st_size
            try:
                while left > 0:
                    copied = os.copy_file_range(source, target, left)
                    if copied == 0:
                        break
                    left -= copied
            except OSError:  # no copy_file_range between these two: copy through memory
                while chunk := os.read(source, 1 << 20):
                    os.write(target, chunk)
        finally:
            os.close(target)
    finally:
        os.close(source)


def materialise(exec_root: Path, layout: InputLayout, sources: Mapping[tuple[Digest, bool], str],
                placement: Placement = LINKS) -> None:
    """Create the planned tree under ``exec_root`` (blocking). ``exec_root`` must be new,
    or an empty directory.

    Links (or copies) are made relative to open directory descriptors, so each costs
    one path component of lookup on each side instead of a dozen: this loop is most
    of a warm action's input time.
    """
    root = str(exec_root)
    try:
        os.mkdir(root)
    except FileExistsError:
        if os.listdir(root):  # made empty for us (a sandbox bound it already): never reused
            raise FileExistsError(f"the exec root {root} is not empty") from None
    join = os.path.join
    for path in layout.directories:
        os.mkdir(join(root, path))
    if placement.owner is not None:
        uid, gid = placement.owner
        os.chown(root, uid, gid)
        for path in layout.directories:
            os.chown(join(root, path), uid, gid)
    fds: dict[str, int] = {}

    def dir_fd(path: str) -> int:
        fd = fds.get(path)
        if fd is None:
            fd = fds[path] = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        return fd

    try:
        for digest, executable, path in layout.files:
            source = sources[(digest, executable)]
            source_dir, _, source_name = source.rpartition("/")
            parent, _, name = path.rpartition("/")
            target_dir = dir_fd(join(root, parent) if parent else root)
            if placement.copy:
                copy_at(source_name, dir_fd(source_dir), name, target_dir, executable)
                continue
            try:
                os.link(source_name, name, src_dir_fd=dir_fd(source_dir), dst_dir_fd=target_dir)
            except OSError:
                link_or_copy(source, join(root, path), executable)  # raises what a copy cannot fix
    finally:
        for fd in fds.values():
            os.close(fd)
    for path, target in layout.symlinks:
        os.symlink(target, join(root, path))


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

    def _cut(self, layout: InputLayout, placement: Placement, keep_open: Collection[str] | None) -> list[str]:
        """Mount points, when mounting pays: they hold ``min_mounted_entries`` entries in all.
        Fewer are linked in less time than a new sandbox starts instead of the one made ready."""
        if not placement.mounts or self.trees is None or keep_open is None:
            return []
        cut = mount_points(layout, keep_open)
        return cut if sum(layout.entries[path] for path in cut) >= self.min_mounted_entries else []

    @asynccontextmanager
    async def prepare(self, root: Digest, exec_root: Path, source: BlobStore, placement: Placement = LINKS,
                      keep_open: Collection[str] | None = None) -> AsyncIterator[list[Mount]]:
        """Create the exec root at ``exec_root``; inside the block, the subtrees to mount
        there (only with ``placement.mounts``, InputTrees and a ``keep_open``: the
        directories the action must be able to write in) stay made and are not evicted."""
        layout = await self.layout(root, source)
        cut = self._cut(layout, placement, keep_open)
        if not cut:
            keys = layout.cache_keys()
            async with self.files.pinned(keys, source):
                sources = {key: self.files.path_of(*key) for key in keys}
                await asyncio.to_thread(materialise, exec_root, layout, sources, placement)
            yield []
            return
        assert self.trees is not None
        trees = self.trees
        digests = {layout.digests[path] for path in cut}
        ready, mine = await trees.claim(digests)
        try:
            await self._materialise_with_trees(layout, cut, mine, exec_root, source, placement)
            trees.mounted += len(cut)
            paths = {**ready, **mine}
            yield [Mount(path, paths[layout.digests[path]]) for path in cut]
        finally:
            trees.release(digests)

    async def _materialise_with_trees(self, layout: InputLayout, cut: list[str], mine: dict[Digest, str],
                                      exec_root: Path, source: BlobStore, placement: Placement) -> None:
        """The exec root without the cut subtrees, and the trees this action builds, from one fetch."""
        assert self.trees is not None
        rest = layout.without(cut)
        subtrees = {}
        for path in cut:  # the same subtree may appear at several paths: built once
            digest = layout.digests[path]
            if digest in mine and digest not in subtrees:
                subtrees[digest] = layout.subtree(path)
        keys = rest.cache_keys()
        for subtree in subtrees.values():
            keys |= subtree.cache_keys()
        try:
            async with self.files.pinned(keys, source):
                sources = {key: self.files.path_of(*key) for key in keys}
                jobs = [asyncio.to_thread(materialise, exec_root, rest, sources, placement)]
                jobs += [asyncio.to_thread(_make_tree, mine[digest], subtree, sources)
                         for digest, subtree in subtrees.items()]
                results = await asyncio.gather(*jobs, return_exceptions=True)
        except BaseException:
            for digest, path in mine.items():
                self.trees.failed(digest, path)
            raise
        for (digest, subtree), result in zip(subtrees.items(), results[1:]):
            if isinstance(result, BaseException):
                self.trees.failed(digest, mine[digest])
            else:
                self.trees.built(digest, mine[digest], len(subtree.files) + len(subtree.symlinks)
                                 + len(subtree.directories) + 1)
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            raise failure


def _make_tree(path: str, layout: InputLayout, sources: Mapping[tuple[Digest, bool], str]) -> None:
    """One subtree, linked from the cache and sealed read-only (blocking)."""
    materialise(Path(path), layout, sources, LINKS)
    seal(path, layout)
