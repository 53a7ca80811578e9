"""Temporary holding space for content whose digest is not known yet.

A download must be hashed before it can be written to the CAS (the BlobStore seam
takes the digest first), so content is spooled: kept in memory up to a small limit,
then in an unnamed temporary file that the OS deletes even if we crash. Archives
are also spooled here to be unpacked, since zip needs random access.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

from cas.digest import Digest
from cas.store import READ_CHUNK_SIZE, BlobStore

DEFAULT_MEMORY_LIMIT = 4 << 20


class SpoolFile:
    """One spooled value. ``write`` is blocking (call it from a worker thread for big chunks)."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)
        self.size += len(chunk)

    async def chunks(self, chunk_size: int = READ_CHUNK_SIZE) -> AsyncIterator[bytes]:
        """Read the value back from the start, in bounded chunks."""
        await asyncio.to_thread(self.file.seek, 0)
        while True:
            chunk = await asyncio.to_thread(self.file.read, chunk_size)
            if not chunk:
                return
            yield chunk

    def rewind(self) -> IO[bytes]:
        """The underlying file, positioned at the start, for blocking readers (tarfile, zipfile)."""
        self.file.seek(0)
        return self.file

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> SpoolFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Spool:
    """Makes SpoolFiles: in memory up to ``memory_limit`` bytes, then in ``directory``."""

    def __init__(self, directory: Path | None = None, memory_limit: int = DEFAULT_MEMORY_LIMIT) -> None:
        self.directory = directory
        self.memory_limit = memory_limit

    def new(self) -> SpoolFile:
        directory = str(self.directory) if self.directory else None
        return SpoolFile(tempfile.SpooledTemporaryFile(max_size=self.memory_limit, dir=directory))  # type: ignore[arg-type]

    def temporary_directory(self) -> tempfile.TemporaryDirectory[str]:
        """A scratch directory under the spool directory (git clones)."""
        return tempfile.TemporaryDirectory(prefix="reapi-asset-", dir=str(self.directory) if self.directory else None)

    async def copy_from(self, cas: BlobStore, digest: Digest) -> SpoolFile:
        """A SpoolFile holding the CAS blob ``digest`` (for unpacking a cached archive)."""
        spooled = self.new()
        try:
            async for chunk in cas.read(digest):
                if len(chunk) >= 1 << 16:
                    await asyncio.to_thread(spooled.write, chunk)
                else:
                    spooled.write(chunk)
        except BaseException:
            spooled.close()
            raise
        return spooled
