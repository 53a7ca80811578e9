"""Input roots: an action's input tree, checked, then hardlinked into a fresh exec root.

Two steps, so the dangerous part is pure and testable on its own:

``plan_layout`` walks the Directory protos and decides every path the worker will
create, refusing (INVALID_ARGUMENT) names that could leave the exec root (``/``,
``.``, ``..``, empty), duplicate names, and symlinks whose target resolves outside
the exec root, following the tree's own symlinks the way the kernel would (a
symlink to ``.`` followed by ``..`` escapes even though each looks harmless).
Nothing is touched until the whole plan is accepted.

``InputRootBuilder.build`` fetches what the local FileCache lacks, then creates the
directories, links (or copies) the files and makes the symlinks in one blocking job
on a thread. A link shares the cache file's inode, so it is used only where the action
cannot write through it (``Placement``, decided by the sandbox: the action runs as
another user than the cache's owner, and not as root); everywhere else inputs are
copies (``copy_file_range``, which shares blocks on filesystems that can).
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cas.digest import Digest
from cas.errors import InvalidArgument
from cas.lru import Lru
from cas.store import BlobStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from worker.directories import DirectoryCache
from worker.cache_files import link_or_copy
from worker.file_cache import FileCache

MAX_SYMLINK_HOPS = 40  # as Linux's MAXSYMLINKS
_MODES = {False: 0o444, True: 0o555}


@dataclass(frozen=True)
class Placement:
    """How input files go into an exec root."""

    copy: bool = False  # copies instead of links to the cache
    owner: tuple[int, int] | None = None  # (uid, gid) that must own the exec root's directories


LINKS = Placement()


@dataclass
class InputLayout:
    """Relative POSIX paths to create; directories parents first."""

    directories: list[str] = field(default_factory=list)
    files: list[tuple[Digest, bool, str]] = field(default_factory=list)
    symlinks: list[tuple[str, str]] = field(default_factory=list)

    def cache_keys(self) -> set[tuple[Digest, bool]]:
        return {(digest, executable) for digest, executable, _ in self.files}


def check_name(name: str, where: str) -> None:
    """A single path component that stays where it is put."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise InvalidArgument(f"input tree: {where} has the unsafe name {name!r} (names must be single path components)")


def plan_layout(root: Digest, tree: Mapping[Digest, re_pb2.Directory]) -> InputLayout:
    """Every path of the tree under ``root``, validated; INVALID_ARGUMENT if any is unsafe."""
    layout = InputLayout()
    symlinks: dict[str, str] = {}
    queue: deque[tuple[str, Digest]] = deque([("", root)])
    while queue:
        prefix, digest = queue.popleft()
        directory = tree[digest]
        where = f"directory {prefix or '(root)'!r}"
        seen: set[str] = set()

        def claim(name: str) -> str:
            check_name(name, where)
            if name in seen:
                raise InvalidArgument(f"input tree: {where} lists {name!r} twice")
            seen.add(name)
            return f"{prefix}{name}"

        for file in directory.files:
            path = claim(file.name)
            layout.files.append((Digest.from_proto(file.digest, root.function), file.is_executable, path))
        for child in directory.directories:
            path = claim(child.name)
            layout.directories.append(path)
            queue.append((f"{path}/", Digest.from_proto(child.digest, root.function)))
        for link in directory.symlinks:
            path = claim(link.name)
            if not link.target:
                raise InvalidArgument(f"input tree: symlink {path!r} has an empty target")
            symlinks[path] = link.target
            layout.symlinks.append((path, link.target))
    for path, target in layout.symlinks:
        if resolve_inside(path, target, symlinks) is None:
            raise InvalidArgument(f"input tree: symlink {path!r} -> {target!r} points outside the exec root")
    return layout


def resolve_inside(link_path: str, target: str, symlinks: Mapping[str, str]) -> list[str] | None:
    """The components ``target`` resolves to from ``link_path``'s directory, or None if it leaves the root.

    Symlinks in the tree are expanded as the kernel would; components the tree does not
    have are taken literally. Absolute targets and loops count as escaping.
    """
    if target.startswith("/"):
        return None
    resolved: list[str] = []
    pending = deque(link_path.split("/")[:-1] + target.split("/"))
    hops = 0
    while pending:
        part = pending.popleft()
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                return None
            resolved.pop()
            continue
        resolved.append(part)
        link = symlinks.get("/".join(resolved))
        if link is not None:
            hops += 1
            if hops > MAX_SYMLINK_HOPS or link.startswith("/"):
                return None
            resolved.pop()
            pending.extendleft(reversed(link.split("/")))
    return resolved


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

    def __init__(self, files: FileCache, directories: DirectoryCache, max_cached_layouts: int = 256) -> None:
        self.files = files
        self.directories = directories
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
        """Fetch and check the tree, then create it at ``exec_root`` (which must not exist yet)."""
        layout = await self.layout(root, source)
        keys = layout.cache_keys()
        async with self.files.pinned(keys, source):
            sources = {key: self.files.path_of(*key) for key in keys}
            await asyncio.to_thread(materialise, exec_root, layout, sources, placement)
        return layout
