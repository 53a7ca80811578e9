"""Build a REAPI Directory tree from entries given by path (archive members, git files).

Paths are checked as they arrive, because an archive is untrusted input:

- absolute paths and ``..`` components are refused (they would escape the root),
- so is a path that passes through a symlink (``link/file`` where ``link`` is a
  symlink: extracting it would write wherever the link points),
- and so is a symlink whose target leaves the tree (absolute, or too many ``..``).

A later entry for the same file replaces the earlier one (tar semantics); a file
and a directory with the same path are a conflict. Directories are serialized
children first with sorted entries, so equal trees get equal digests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cas.digest import Digest, DigestFunctionValue
from cas.errors import FailedPrecondition
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2


# Deeper paths are refused: serialization recurses once per level.
MAX_DEPTH = 256


class UnsafeEntry(FailedPrecondition):
    """An entry that would escape the root or clash with another; the archive is refused."""


@dataclass
class _File:
    digest: Digest
    executable: bool


@dataclass
class _Symlink:
    target: str


@dataclass
class _Dir:
    children: dict[str, _Dir | _File | _Symlink] = field(default_factory=dict)


def split_entry_path(name: str) -> list[str]:
    """The components of an entry name; UnsafeEntry if it could escape the root."""
    if "\x00" in name:
        raise UnsafeEntry(f"entry {name!r} has a NUL character in its name")
    if name.startswith("/"):
        raise UnsafeEntry(f"entry {name!r} has an absolute path, which would escape the root")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeEntry(f"entry {name!r} has a '..' component, which would escape the root")
    if len(parts) > MAX_DEPTH:
        raise UnsafeEntry(f"entry {name[:100]!r}... is more than {MAX_DEPTH} directories deep")
    return parts


def _check_symlink_target(parts: list[str], target: str) -> None:
    if not target:
        raise UnsafeEntry(f"symlink {'/'.join(parts)!r} has an empty target")
    if target.startswith("/"):
        raise UnsafeEntry(f"symlink {'/'.join(parts)!r} points to the absolute path {target!r}, outside the root")
    depth = len(parts) - 1  # the directory holding the link
    for component in target.split("/"):
        if component == "..":
            depth -= 1
            if depth < 0:
                raise UnsafeEntry(f"symlink {'/'.join(parts)!r} points to {target!r}, outside the root")
        elif component not in ("", "."):
            depth += 1


@dataclass(frozen=True)
class BuiltTree:
    """The Directory messages of a tree, and the digest of each directory by path."""

    root: Digest
    blobs: dict[Digest, bytes]  # every Directory message, serialized
    directories: dict[str, Digest]  # "" is the root; "a/b" a subdirectory

    def subdirectory(self, path: str) -> Digest | None:
        return self.directories.get(path.strip("/"))


class TreeBuilder:
    """Collects entries by path, then serializes the Directory messages."""

    def __init__(self, function: DigestFunctionValue) -> None:
        self.function = function
        self.root = _Dir()
        self.entries = 0

    def _parent(self, parts: list[str], name: str) -> _Dir:
        node = self.root
        for i, part in enumerate(parts[:-1]):
            child = node.children.get(part)
            if child is None:
                child = node.children[part] = _Dir()
            elif isinstance(child, _Symlink):
                raise UnsafeEntry(f"entry {name!r} passes through the symlink {'/'.join(parts[: i + 1])!r}")
            elif isinstance(child, _File):
                raise UnsafeEntry(f"entry {name!r} needs {'/'.join(parts[: i + 1])!r} to be a directory, but it is a file")
            node = child
        return node

    def _place(self, name: str, parts: list[str], new: _File | _Symlink) -> None:
        if not parts:
            raise UnsafeEntry(f"entry {name!r} names the root itself as a file")
        parent = self._parent(parts, name)
        if isinstance(parent.children.get(parts[-1]), _Dir):
            raise UnsafeEntry(f"entry {name!r} is a file, but an earlier entry made it a directory")
        parent.children[parts[-1]] = new
        self.entries += 1

    def add_file(self, name: str, digest: Digest, executable: bool) -> None:
        self._place(name, split_entry_path(name), _File(digest, executable))

    def add_symlink(self, name: str, target: str) -> None:
        parts = split_entry_path(name)
        _check_symlink_target(parts, target)
        self._place(name, parts, _Symlink(target))

    def add_directory(self, name: str) -> None:
        parts = split_entry_path(name)
        if not parts:
            return
        parent = self._parent(parts, name)
        existing = parent.children.get(parts[-1])
        if existing is None:
            parent.children[parts[-1]] = _Dir()
            self.entries += 1
        elif not isinstance(existing, _Dir):
            raise UnsafeEntry(f"entry {name!r} is a directory, but an earlier entry made it a file or symlink")

    def file_at(self, name: str) -> tuple[Digest, bool] | None:
        """An earlier regular file's digest and executable bit (for tar hard links)."""
        node: _Dir | _File | _Symlink | None = self.root
        for part in split_entry_path(name):
            node = node.children.get(part) if isinstance(node, _Dir) else None
        return (node.digest, node.executable) if isinstance(node, _File) else None

    def build(self) -> BuiltTree:
        blobs: dict[Digest, bytes] = {}
        by_path: dict[str, Digest] = {}

        def serialize(node: _Dir, path: str) -> Digest:
            message = re_pb2.Directory()
            for name in sorted(node.children):
                child = node.children[name]
                if isinstance(child, _Dir):
                    digest = serialize(child, f"{path}/{name}" if path else name)
                    message.directories.add(name=name, digest=digest.to_proto())
                elif isinstance(child, _File):
                    message.files.add(name=name, digest=child.digest.to_proto(), is_executable=child.executable)
                else:
                    message.symlinks.add(name=name, target=child.target)
            data = message.SerializeToString(deterministic=True)
            digest = Digest.of(data, self.function)
            blobs[digest] = data
            by_path[path] = digest
            return digest

        root = serialize(self.root, "")
        return BuiltTree(root, blobs, by_path)
