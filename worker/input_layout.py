"""InputLayout: every path of an input tree, checked before anything is touched.

``plan_layout`` walks the Directory protos and decides every path the worker will
create, refusing (INVALID_ARGUMENT) names that could leave the exec root (``/``,
``.``, ``..``, empty), duplicate names, and symlinks whose target resolves outside
the exec root, following the tree's own symlinks the way the kernel would (a
symlink to ``.`` followed by ``..`` escapes even though each looks harmless).
Nothing is touched until the whole plan is accepted.

A layout also remembers each directory's digest and how many entries lie under it,
and which of its files and symlinks each directory holds, so the part of it that is
mounted from the worker's tree cache (worker/input_trees.py) can be cut out
(``without``) and a subtree taken as a layout of its own (``subtree``) in time
proportional to what they keep.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from operator import attrgetter

from cas.digest import Digest, digests_from_protos
from cas.errors import InvalidArgument
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2

MAX_SYMLINK_HOPS = 40  # as Linux's MAXSYMLINKS

FileEntry = tuple[Digest, bool, str]  # (digest, executable, relative path)


@dataclass
class InputLayout:
    """Relative POSIX paths to create; directories parents first (breadth-first)."""

    directories: list[str] = field(default_factory=list)
    files: list[FileEntry] = field(default_factory=list)
    symlinks: list[tuple[str, str]] = field(default_factory=list)
    # Per directory path ("" is the root): its digest, the entries under it (files,
    # symlinks and directories, at any depth), and the slices of ``files`` and
    # ``symlinks`` that are its own.
    digests: dict[str, Digest] = field(default_factory=dict)
    entries: dict[str, int] = field(default_factory=dict)
    own_files: dict[str, tuple[int, int]] = field(default_factory=dict)
    own_symlinks: dict[str, tuple[int, int]] = field(default_factory=dict)

    def cache_keys(self) -> set[tuple[Digest, bool]]:
        return {(digest, executable) for digest, executable, _ in self.files}

    def without(self, cut: Iterable[str]) -> InputLayout:
        """What is left once the subtrees at ``cut`` are taken out: each cut directory
        stays (empty: a mount point); nothing under it does."""
        cut = set(cut)
        if not cut:
            return self
        out = InputLayout()
        kept = [""]
        for path in self.directories:
            parent = path.rpartition("/")[0]
            if _under_any(parent, cut):
                continue
            out.directories.append(path)
            if path not in cut:
                kept.append(path)
        for path in kept:
            start, end = self.own_files.get(path, (0, 0))
            out.files.extend(self.files[start:end])
            start, end = self.own_symlinks.get(path, (0, 0))
            out.symlinks.extend(self.symlinks[start:end])
        return out

    def subtree(self, path: str) -> InputLayout:
        """The layout of the directory at ``path``, with paths relative to it."""
        out = InputLayout()
        prefix = f"{path}/"
        cut = len(prefix)
        inside = [path] + [d for d in self.directories if d.startswith(prefix)]
        out.directories = [d[cut:] for d in inside[1:]]
        for directory in inside:
            start, end = self.own_files.get(directory, (0, 0))
            out.files.extend((digest, executable, name[cut:]) for digest, executable, name in self.files[start:end])
            start, end = self.own_symlinks.get(directory, (0, 0))
            out.symlinks.extend((name[cut:], target) for name, target in self.symlinks[start:end])
        return out


def _under_any(path: str, roots: set[str]) -> bool:
    """Whether ``path`` is one of ``roots`` or lies under one."""
    while path:
        if path in roots:
            return True
        path = path.rpartition("/")[0]
    return False


def check_name(name: str, where: str) -> None:
    """A single path component that stays where it is put."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise InvalidArgument(f"input tree: {where} has the unsafe name {name!r} (names must be single path components)")


_NAME_OF = attrgetter("name")
_DIGEST_OF = attrgetter("digest")
_EXECUTABLE_OF = attrgetter("is_executable")
_UNSAFE = frozenset(("", ".", ".."))


def _plain_names(names: list[str]) -> bool:
    """Whether these first names of a directory are all distinct single safe components
    (the check ``check_name`` makes one name at a time), without a Python call per name."""
    joined = "".join(names)
    return ("/" not in joined and "\0" not in joined and _UNSAFE.isdisjoint(names)
            and len(set(names)) == len(names))


def plan_layout(root: Digest, tree: Mapping[Digest, re_pb2.Directory]) -> InputLayout:
    """Every path of the tree under ``root``, validated; INVALID_ARGUMENT if any is unsafe."""
    layout = InputLayout()
    symlinks: dict[str, str] = {}
    queue: deque[tuple[str, Digest]] = deque([("", root)])
    while queue:
        path, digest = queue.popleft()
        prefix = f"{path}/" if path else ""
        directory = tree[digest]
        layout.digests[path] = digest
        where = f"directory {path or '(root)'!r}"
        seen: set[str] = set()

        def claim(name: str) -> str:
            check_name(name, where)
            if name in seen:
                raise InvalidArgument(f"input tree: {where} lists {name!r} twice")
            seen.add(name)
            return f"{prefix}{name}"

        first_file = len(layout.files)
        files = directory.files
        if files:
            names = list(map(_NAME_OF, files))
            if _plain_names(names):  # the common case, checked in a few C-level passes
                seen.update(names)
                paths = [f"{prefix}{name}" for name in names] if prefix else names
            else:  # the precise error for the name at fault
                paths = [claim(name) for name in names]
            layout.files.extend(zip(digests_from_protos(list(map(_DIGEST_OF, files)), root.function),
                                    map(_EXECUTABLE_OF, files), paths))
        layout.own_files[path] = (first_file, len(layout.files))
        for child in directory.directories:
            child_path = claim(child.name)
            layout.directories.append(child_path)
            queue.append((child_path, Digest.from_proto(child.digest, root.function)))
        first_link = len(layout.symlinks)
        for link in directory.symlinks:
            link_path = claim(link.name)
            if not link.target:
                raise InvalidArgument(f"input tree: symlink {link_path!r} has an empty target")
            symlinks[link_path] = link.target
            layout.symlinks.append((link_path, link.target))
        layout.own_symlinks[path] = (first_link, len(layout.symlinks))
        layout.entries[path] = len(directory.files) + len(directory.directories) + len(directory.symlinks)
    for path in reversed(layout.directories):  # children before parents: subtree totals
        parent = path.rpartition("/")[0]
        layout.entries[parent] += layout.entries[path]
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
