"""Unpack an archive blob from the CAS into a Directory tree in the CAS.

Formats: tar (plain, gzip, bzip2, xz; tarfile detects the compression) and zip,
told apart by their first bytes rather than by the URI or ``resource_type``,
which are often wrong. Regular files keep their executable bit (owner x), and
symlinks are kept as SymlinkNodes; tar hard links become a second file with the
same digest. Device files and FIFOs have no REAPI form and are skipped. Entry
paths are checked by TreeBuilder (nothing may escape the root).

The archive is read in a worker thread (tarfile and zipfile block); file contents
go to the CAS through a ThreadUploader, so memory stays bounded whatever the
archive holds. The UnpackLimits (server/assets/limits.py) bound the tree by the
CAS's size, the archive's compression ratio and the number of entries; a member
whose declared size would pass them is refused before it is read. Files stored
before a refusal are referenced by nothing (no index entry, no Directory) and
leave with the CAS's eviction.
"""

from __future__ import annotations

import asyncio
import logging
import stat
import tarfile
import zipfile
from typing import IO

from cas.digest import Digest, DigestFunctionValue
from cas.errors import FailedPrecondition
from cas.store import BlobStore
from server.assets.limits import UnpackLimits
from server.assets.spool import Spool
from server.assets.tree_builder import BuiltTree, TreeBuilder, UnsafeEntry
from server.assets.uploader import ThreadUploader

log = logging.getLogger("reapi.assets")

# Files up to this size are read whole and batched; larger ones are streamed.
SMALL_FILE = 1 << 20

# resource_type values that mean "an archive to unpack" (the format is sniffed).
ARCHIVE_RESOURCE_TYPES = frozenset({
    "", "application/octet-stream",
    "application/x-tar", "application/x-gtar", "application/tar",
    "application/gzip", "application/x-gzip", "application/x-compressed-tar", "application/x-tgz",
    "application/x-bzip2", "application/x-bzip-compressed-tar", "application/x-bzip2-compressed-tar",
    "application/x-xz", "application/x-xz-compressed-tar",
    "application/zip", "application/x-zip-compressed",
})


class ArchiveUnpacker:
    """Turns a tar or zip blob into a tree; limits guard against archive bombs."""

    def __init__(self, spool: Spool, limits: UnpackLimits | None = None) -> None:
        self.spool = spool
        self.limits = limits or UnpackLimits()

    async def unpack(self, cas: BlobStore, archive: Digest, function: DigestFunctionValue, source: str = "archive") -> BuiltTree:
        """Unpack ``archive`` (a blob in ``cas``); store every file and Directory; the tree."""
        spooled = await self.spool.copy_from(cas, archive)
        budget = self.limits.budget(cas, packed_size=archive.size_bytes)
        uploader = ThreadUploader(cas, asyncio.get_running_loop(), self.spool, function, budget, what=source)

        def run() -> BuiltTree:
            with spooled:
                builder = TreeBuilder(function)
                unpack_into(spooled.rewind(), builder, uploader, source)
                uploader.flush()
                return builder.build()

        try:
            tree = await asyncio.to_thread(run)
        finally:
            uploader.cancel()  # stops the thread if we were cancelled or timed out
        await store_directories(cas, tree)
        return tree


async def store_directories(cas: BlobStore, tree: BuiltTree) -> None:
    """Write the tree's Directory messages that the CAS does not hold yet."""
    missing = await cas.find_missing(list(tree.blobs))
    if missing:
        failures = await cas.put_many({d: tree.blobs[d] for d in missing})
        if failures:
            digest, err = next(iter(failures.items()))
            raise err.with_context(f"storing directory {digest}")


def unpack_into(file: IO[bytes], builder: TreeBuilder, uploader: ThreadUploader, source: str) -> None:
    """Blocking: feed every member of the archive in ``file`` to ``builder``."""
    magic = file.read(4)
    file.seek(0)
    try:
        if magic[:2] == b"PK":
            _unpack_zip(file, builder, uploader)
        else:
            _unpack_tar(file, builder, uploader)
    except UnsafeEntry as err:
        raise err.with_context(source) from None
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        # Corrupt or truncated data; zlib/lzma/bz2 errors surface as these.
        raise FailedPrecondition(f"{source}: not a valid tar (plain, gzip, bzip2, xz) or zip archive: {exc}") from None


def _unpack_tar(file: IO[bytes], builder: TreeBuilder, uploader: ThreadUploader) -> None:
    with tarfile.open(fileobj=file, mode="r:*") as archive:
        for member in archive:
            uploader.count_entry()
            if member.isdir():
                builder.add_directory(member.name)
            elif member.isreg():
                extracted = archive.extractfile(member)
                assert extracted is not None
                with extracted:
                    digest = _store(extracted, member.size, uploader)
                builder.add_file(member.name, digest, executable=bool(member.mode & stat.S_IXUSR))
            elif member.issym():
                builder.add_symlink(member.name, member.linkname)
            elif member.islnk():
                target = builder.file_at(member.linkname)
                if target is None:
                    raise UnsafeEntry(f"hard link {member.name!r} points to {member.linkname!r}, which is not an earlier file")
                uploader.count_copy(target[0].size_bytes)
                builder.add_file(member.name, target[0], executable=target[1])
            else:
                log.debug("skipping special file %r in archive", member.name)


def _unpack_zip(file: IO[bytes], builder: TreeBuilder, uploader: ThreadUploader) -> None:
    with zipfile.ZipFile(file) as archive:
        for info in archive.infolist():
            uploader.count_entry()
            mode = info.external_attr >> 16 if info.create_system == 3 else 0  # 3: Unix
            if info.is_dir():
                builder.add_directory(info.filename)
            elif stat.S_ISLNK(mode):
                with archive.open(info) as link:
                    target = link.read(4096).decode("utf-8", "surrogateescape")
                builder.add_symlink(info.filename, target)
            else:
                with archive.open(info) as member:
                    digest = _store(member, info.file_size, uploader)
                builder.add_file(info.filename, digest, executable=bool(mode & stat.S_IXUSR))


def _store(member: IO[bytes], size: int, uploader: ThreadUploader) -> Digest:
    # tarfile and zipfile never return more than the member's declared size.
    uploader.ensure_room(size)
    if size <= SMALL_FILE:
        return uploader.put(member.read())
    return uploader.put_stream(member.read, size)
