"""``file://`` URIs, for sites that mirror downloads on a shared file system.

Off unless the operator adds "file" to ``[assets] allowed_schemes``: otherwise any
client could read any file the server can.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

from cas.digest import DigestFunctionValue
from cas.errors import FailedPrecondition, NotFound, PermissionDenied, ResourceExhausted
from cas.store import BlobStore
from server.assets.ingest import Ingested, ingest
from server.assets.policy import FetchPolicy
from server.assets.spool import Spool
from server.assets.sri import Checksum

CHUNK_SIZE = 1 << 20


class LocalFileReader:
    """Reads a local file into the CAS, with the same limits as a download."""

    def __init__(self, policy: FetchPolicy, spool: Spool) -> None:
        self.policy = policy
        self.spool = spool

    async def download(
        self,
        uri: str,
        headers: Mapping[str, str],
        cas: BlobStore,
        function: DigestFunctionValue,
        checksums: tuple[Checksum, ...] = (),
    ) -> Ingested:
        self.policy.check(uri)
        path = Path(unquote(urlsplit(uri).path))
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            raise NotFound(f"{uri}: no such file") from None
        except PermissionError:
            raise PermissionDenied(f"{uri}: the server may not read this file") from None
        except OSError as exc:
            raise FailedPrecondition(f"{uri}: {exc.strerror}") from None
        with handle:
            size = (await asyncio.to_thread(handle.seek, 0, 2))
            await asyncio.to_thread(handle.seek, 0)
            if size > self.policy.max_download_size:
                raise ResourceExhausted(f"{uri}: {size} bytes is over the {self.policy.max_download_size}-byte download limit")

            async def chunks() -> AsyncIterator[bytes]:
                while chunk := await asyncio.to_thread(handle.read, CHUNK_SIZE):
                    yield chunk

            return await ingest(chunks(), cas, self.spool, function, checksums, expected_size=size, source=uri)
