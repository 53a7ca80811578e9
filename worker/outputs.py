"""Output collection: what the action left at its declared paths, as ActionResult fields.

Collection runs after the whole process group is dead, in one blocking job on a
thread. Nothing is followed out of the exec root: outputs that are symlinks are
reported as symlinks (with their target, never read through), symlinks inside
output directories become SymlinkNodes, and an output whose parent was turned into a
symlink leading outside is refused. Missing outputs are simply omitted (REv2).

Files are hashed with the lease's digest function; small ones are kept in memory for
the upload, large ones by path so the upload streams them. ``inline_outputs`` puts
small output files and stdout/stderr into the result itself when the server agreed
to take them that way (docs/BOTS_PROTOCOL.md section 7; the server stores those the
CAS lacks); ``upload_missing`` sends the rest, only what the CAS lacks: one
FindMissingBlobs, batched updates for small blobs, ByteStream for large ones.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cas.digest import Digest
from cas.errors import FailedPrecondition, InvalidArgument
from cas.store import READ_CHUNK_SIZE, BlobStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from worker.output_paths import DeclaredOutput, resolves_inside

# Files up to this size are read into memory once (hash and upload); larger ones stream.
IN_MEMORY_LIMIT = 1 << 20
# At most this many bytes of outputs ride inline in a report, whatever the server
# allows: the report goes on a call with a deadline under 1 s (worker/daemon.py), which
# must carry them and have them stored in time even over a modest network link.
MAX_INLINE_OUTPUT_BYTES = 256 << 10

BlobSource = bytes | Path


@dataclass
class CollectedOutputs:
    """ActionResult output fields plus the blobs they reference."""

    result: re_pb2.ActionResult = field(default_factory=re_pb2.ActionResult)
    blobs: dict[Digest, BlobSource] = field(default_factory=dict)
    # Regular files that could seed the local cache: (path, digest, executable).
    files: list[tuple[Path, Digest, bool]] = field(default_factory=list)

    @property
    def output_bytes(self) -> int:
        """The size of every output file (those inside output directories too)."""
        return sum(digest.size_bytes for _, digest, _ in self.files)

    def add_blob(self, data: bytes, function: int) -> Digest:
        digest = Digest.of(data, function)
        self.blobs.setdefault(digest, data)
        return digest


def hash_file(path: Path | str, function: int) -> tuple[Digest, BlobSource]:
    """The digest of a file, with its bytes if small, else its path (blocking)."""
    with open(path, "rb") as f:
        data = f.read(IN_MEMORY_LIMIT + 1)
        if len(data) <= IN_MEMORY_LIMIT:
            return Digest.of(data, function), data
        hasher = Digest.empty(function).algorithm.new()
        size = len(data)
        hasher.update(data)
        while chunk := f.read(READ_CHUNK_SIZE):
            hasher.update(chunk)
            size += len(chunk)
    return Digest(hasher.hexdigest(), size, function), Path(path)


class OutputCollector:
    """Reads declared outputs under one exec root (blocking; run it in a thread)."""

    def __init__(self, exec_root: Path, function: int, directory_format: int = 0) -> None:
        self.exec_root = exec_root
        self.function = function
        self.want_tree = directory_format != re_pb2.Command.OutputDirectoryFormat.DIRECTORY_ONLY
        self.want_root_digest = directory_format in (
            re_pb2.Command.OutputDirectoryFormat.DIRECTORY_ONLY,
            re_pb2.Command.OutputDirectoryFormat.TREE_AND_DIRECTORY,
        )
        self.out = CollectedOutputs()

    def collect(self, outputs: list[DeclaredOutput]) -> CollectedOutputs:
        for output in outputs:
            if not resolves_inside(self.exec_root, output.exec_path):
                raise InvalidArgument(f"output path {output.path!r} resolves outside the exec root after the run")
            full = self.exec_root / output.exec_path
            try:
                mode = os.lstat(full).st_mode
            except (FileNotFoundError, NotADirectoryError):
                continue  # not produced: omitted, not an error
            if stat.S_ISLNK(mode):
                self._symlink(output, full)
            elif stat.S_ISREG(mode):
                if output.kind == "directory":
                    raise FailedPrecondition(f"output directory {output.path!r} is a regular file")
                self._file(output, full, mode)
            elif stat.S_ISDIR(mode):
                if output.kind == "file":
                    raise FailedPrecondition(f"output file {output.path!r} is a directory")
                self._directory(output, full)
            else:
                raise FailedPrecondition(f"output {output.path!r} is neither a file, a directory nor a symlink")
        return self.out

    def _symlink(self, output: DeclaredOutput, full: Path) -> None:
        link = re_pb2.OutputSymlink(path=output.path, target=os.readlink(full))
        result = self.out.result
        result.output_symlinks.append(link)
        # v2.0 clients (Bazel 4) read the symlink lists that match what they declared.
        if output.kind == "file":
            result.output_file_symlinks.append(link)
        elif output.kind == "directory":
            result.output_directory_symlinks.append(link)

    def _file(self, output: DeclaredOutput, full: Path, mode: int) -> None:
        digest, source = hash_file(full, self.function)
        self.out.blobs.setdefault(digest, source)
        executable = bool(mode & stat.S_IXUSR)
        self.out.files.append((full, digest, executable))
        self.out.result.output_files.add(path=output.path, digest=digest.to_proto(), is_executable=executable)

    def _directory(self, output: DeclaredOutput, full: Path) -> None:
        unique: dict[Digest, re_pb2.Directory] = {}
        order: list[Digest] = []  # children before parents (post-order)
        root = self._walk(full, unique, order)
        root_digest = Digest.of(root.SerializeToString(deterministic=True), self.function)
        entry = self.out.result.output_directories.add(path=output.path)
        if self.want_tree:
            # Reversed post-order puts every parent before its children.
            children = [unique[d] for d in reversed(order) if d != root_digest]
            tree = re_pb2.Tree(root=root, children=children)
            tree_digest = self.out.add_blob(tree.SerializeToString(deterministic=True), self.function)
            entry.tree_digest.CopyFrom(tree_digest.to_proto())
            entry.is_topologically_sorted = True
        if self.want_root_digest:
            for digest, directory in unique.items():
                self.out.blobs.setdefault(digest, directory.SerializeToString(deterministic=True))
            entry.root_directory_digest.CopyFrom(root_digest.to_proto())

    def _walk(self, path: Path, unique: dict[Digest, re_pb2.Directory], order: list[Digest]) -> re_pb2.Directory:
        directory = re_pb2.Directory()
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            if entry.is_symlink():
                directory.symlinks.add(name=entry.name, target=os.readlink(entry.path))
            elif entry.is_dir(follow_symlinks=False):
                child = self._walk(Path(entry.path), unique, order)
                digest = Digest.of(child.SerializeToString(deterministic=True), self.function)
                directory.directories.add(name=entry.name, digest=digest.to_proto())
            elif entry.is_file(follow_symlinks=False):
                digest, source = hash_file(entry.path, self.function)
                self.out.blobs.setdefault(digest, source)
                executable = bool(entry.stat(follow_symlinks=False).st_mode & stat.S_IXUSR)
                self.out.files.append((Path(entry.path), digest, executable))
                directory.files.add(name=entry.name, digest=digest.to_proto(), is_executable=executable)
            # Sockets, FIFOs and devices have no REv2 form; they are left out.
        digest = Digest.of(directory.SerializeToString(deterministic=True), self.function)
        if digest not in unique:
            unique[digest] = directory
            order.append(digest)
        return directory


async def file_chunks(path: Path) -> AsyncIterator[bytes]:
    """A file's content in bounded chunks, read on a thread."""
    f = await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(f.read, READ_CHUNK_SIZE):
            yield chunk
    finally:
        f.close()


def inline_outputs(
    result: re_pb2.ActionResult, blobs: Mapping[Digest, BlobSource], limit: int, function: int
) -> dict[Digest, BlobSource]:
    """Put small output files' contents and stdout/stderr into ``result`` (smallest
    first, each blob once, at most ``limit`` bytes in all); return the blobs still to
    upload. Only for a server that agreed to take outputs this way."""
    rest = dict(blobs)
    if limit <= 0:
        return rest
    slots: list[tuple[Digest, re_pb2.OutputFile | str]] = [
        (Digest.from_proto(output.digest, function), output) for output in result.output_files
    ]
    for raw_field, digest_field in (("stdout_raw", "stdout_digest"), ("stderr_raw", "stderr_digest")):
        if result.HasField(digest_field):
            slots.append((Digest.from_proto(getattr(result, digest_field), function), raw_field))
    budget = limit
    inlined: set[Digest] = set()
    for digest, slot in sorted(slots, key=lambda item: item[0].size_bytes):
        data = blobs.get(digest)
        if not isinstance(data, bytes) or not data or digest in inlined:
            continue  # streamed from disk (large), empty (nothing to store), or sent already
        if digest.size_bytes > budget:
            break
        budget -= digest.size_bytes
        inlined.add(digest)
        rest.pop(digest, None)
        if isinstance(slot, str):
            setattr(result, slot, data)
        else:
            slot.contents = data
    return rest


async def upload_missing(store: BlobStore, blobs: Mapping[Digest, BlobSource]) -> int:
    """Upload the blobs ``store`` lacks; return how many were sent. Raises the first failure."""
    if not blobs:
        return 0
    missing = await store.find_missing(list(blobs))
    if not missing:
        return 0
    in_memory = {d: blobs[d] for d in missing if isinstance(blobs[d], bytes)}
    on_disk = [d for d in missing if not isinstance(blobs[d], bytes)]
    writes = [store.write(d, file_chunks(blobs[d])) for d in on_disk]  # type: ignore[arg-type]
    results = await asyncio.gather(store.put_many(in_memory), *writes, return_exceptions=True)  # type: ignore[arg-type]
    for result in results:
        if isinstance(result, BaseException):
            raise result
    failures = results[0]
    if failures:
        digest, err = next(iter(failures.items()))  # type: ignore[union-attr]
        raise err.with_context(f"uploading output {digest}")
    return len(missing)
