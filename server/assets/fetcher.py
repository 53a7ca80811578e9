"""AssetFetcher: FetchBlob and FetchDirectory without the gRPC layer.

Order of work for a request:

1. **Index**: each URI with exactly the request's qualifiers; the entry must be
   live (pushed ``expire_at``), at least as new as ``oldest_content_accepted``,
   and complete in the CAS.
2. **Qualifier check**: names we cannot honour at an origin are INVALID_ARGUMENT
   now (pushed content may carry any qualifier, so this waits until step 1 misses).
3. **Checksum**: content that the server itself once verified to have a
   requested ``checksum.sri`` hash is answered without touching the network.
4. **Origin**: the URIs in order, under one deadline, until one succeeds. The work
   runs as a task of its own: a client whose RPC deadline is shorter than the fetch
   can retry and join the same download (the spec asks the server to keep going),
   and concurrent identical requests share one download.

Failures at the origin are data (``FetchOutcome.error``); the service puts them in
the response's ``status``. When every URI failed, the most telling failure gives the
code (a checksum mismatch says more than a 404 from a mirror), and the message lists
every URI's failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

import grpc

from cas.digest import Digest, DigestFunctionValue
from cas.errors import DeadlineExceeded, InvalidArgument, NotFound, ReapiError, Unavailable
from cas.store import BlobStore
from remote_apis_protos.build.bazel.remote.asset.v1 import remote_asset_pb2 as asset_pb2
from server.assets.archive import ARCHIVE_RESOURCE_TYPES, ArchiveUnpacker
from server.assets.completeness import entry_is_complete
from server.assets.git import GitFetcher
from server.assets.index import BLOB, DIRECTORY, AssetEntry, AssetIndex, AssetKey, Clock
from server.assets.ingest import Ingested
from server.assets.qualifiers import (
    BLOB_QUALIFIERS, DIRECTORY as DIRECTORY_QUALIFIER, DIRECTORY_QUALIFIERS, GIT_RESOURCE_TYPE, RESOURCE_TYPE,
    VCS_BRANCH, VCS_COMMIT, Qualifiers, unsupported_error,
)
from server.assets.sri import SRI_ALGORITHMS, Checksum
from server.assets.tree_builder import BuiltTree
from server.assets.uris import redact_uri

log = logging.getLogger("reapi.assets")

T = TypeVar("T")
# A fetched tree: the URI that worked, the tree, and qualifiers learnt on the way.
_Tree = tuple[str, BuiltTree, tuple[tuple[str, str], ...]]

# Which failure explains best why no URI worked (lower is more telling).
_RANK = {
    grpc.StatusCode.ABORTED: 0,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 1,
    grpc.StatusCode.PERMISSION_DENIED: 2,
    grpc.StatusCode.FAILED_PRECONDITION: 3,
    grpc.StatusCode.DEADLINE_EXCEEDED: 4,
    grpc.StatusCode.UNAVAILABLE: 5,
    grpc.StatusCode.NOT_FOUND: 9,
}


class Downloader(Protocol):
    async def download(
        self, uri: str, headers: Mapping[str, str], cas: BlobStore, function: DigestFunctionValue,
        checksums: tuple[Checksum, ...] = (),
    ) -> Ingested: ...


@dataclass(frozen=True)
class FetchRequest:
    instance: str
    uris: tuple[str, ...]
    qualifiers: Qualifiers
    function: DigestFunctionValue
    timeout: float | None = None  # seconds; None: the configured default
    oldest_accepted: float | None = None  # seconds since the epoch
    # Raised instead of going to the origin: the caller may read cached assets only
    # (it lacks the execute permission; server/auth decides, the service passes it on).
    download_refusal: ReapiError | None = None


@dataclass(frozen=True)
class Deadline:
    """When an origin fetch must be done (event-loop time) and the timeout it came from."""

    at: float
    seconds: float


@dataclass(frozen=True)
class FetchOutcome:
    """A digest, or the error that stopped every URI (``uri`` names the one reported)."""

    uri: str
    digest: Digest | None = None
    error: ReapiError | None = None
    expires_at: float | None = None
    extra_qualifiers: tuple[tuple[str, str], ...] = ()

    def qualifiers(self, request: FetchRequest) -> list[asset_pb2.Qualifier]:
        out = request.qualifiers.public()
        out += [asset_pb2.Qualifier(name=n, value=v) for n, v in self.extra_qualifiers]
        return out


def _combined(failures: list[tuple[str, ReapiError]]) -> FetchOutcome:
    uri, chosen = min(failures, key=lambda f: _RANK.get(f[1].code, 6))
    if len(failures) == 1:
        return FetchOutcome(uri, error=chosen)
    others = "; ".join(err.message for u, err in failures if err is not chosen)
    return FetchOutcome(uri, error=type(chosen)(f"{chosen.message} (other URIs: {others})", chosen.details))


class AssetFetcher:
    """Resolves Fetch requests from the index, the CAS and the origins."""

    def __init__(
        self,
        index: AssetIndex,
        downloaders: Mapping[str, Downloader],
        unpacker: ArchiveUnpacker,
        git: GitFetcher,
        default_timeout: float,
        max_timeout: float,
        clock: Clock,
    ) -> None:
        self.index = index
        self.downloaders = downloaders
        self.unpacker = unpacker
        self.git = git
        self.default_timeout = default_timeout
        self.max_timeout = max_timeout
        self.clock = clock
        self._inflight: dict[tuple[object, ...], asyncio.Task[FetchOutcome]] = {}

    # -- public ---------------------------------------------------------------

    async def fetch_blob(self, cas: BlobStore, request: FetchRequest) -> FetchOutcome:
        _check_uris(request)
        hit = await self._from_index(cas, request, BLOB)
        if hit is not None:
            return hit
        self._check_supported(request, BLOB_QUALIFIERS, "FetchBlob")
        if request.qualifiers.is_git:
            raise InvalidArgument(f"{RESOURCE_TYPE} {GIT_RESOURCE_TYPE} is served by FetchDirectory, not FetchBlob")
        hit = await self._from_checksum(cas, request)
        if hit is not None:
            return hit
        return await self._shared(BLOB, request, lambda: self._blob_from_origin(cas, request, self._deadline(request)))

    async def fetch_directory(self, cas: BlobStore, request: FetchRequest) -> FetchOutcome:
        _check_uris(request)
        hit = await self._from_index(cas, request, DIRECTORY)
        if hit is not None:
            return hit
        self._check_supported(request, DIRECTORY_QUALIFIERS, "FetchDirectory")
        q = request.qualifiers
        if (q.vcs_commit or q.vcs_branch) and not q.is_git:
            raise InvalidArgument(f"{VCS_COMMIT} and {VCS_BRANCH} need {RESOURCE_TYPE} = {GIT_RESOURCE_TYPE}")
        if not q.is_git and q.resource_type not in ARCHIVE_RESOURCE_TYPES:
            supported = ", ".join(sorted({t for t in ARCHIVE_RESOURCE_TYPES if t} | {GIT_RESOURCE_TYPE}))
            raise InvalidArgument(f"{RESOURCE_TYPE} {q.resource_type!r} cannot be unpacked (supported: {supported})")
        return await self._shared(DIRECTORY, request, lambda: self._directory_from_origin(cas, request))

    async def aclose(self) -> None:
        """Cancel downloads still running (server shutdown)."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- cache ------------------------------------------------------------------

    def _key(self, request: FetchRequest, kind: str, uri: str, pairs: tuple[tuple[str, str], ...] | None = None) -> AssetKey:
        return AssetKey(request.instance, kind, uri, request.qualifiers.pairs if pairs is None else pairs, request.function)

    async def _from_index(self, cas: BlobStore, request: FetchRequest, kind: str) -> FetchOutcome | None:
        for uri in request.uris:
            entry = await self.index.get(self._key(request, kind, uri))
            if entry is None or not entry.satisfies(request.oldest_accepted):
                continue
            if await entry_is_complete(cas, entry):
                log.debug("asset fetch: %s answered from the index (%s)", redact_uri(uri), entry.digest)
                return FetchOutcome(uri, entry.digest, expires_at=entry.expires_at)
            log.info("asset index: %s is incomplete in the CAS; fetching again", redact_uri(uri))
        return None

    async def _from_checksum(self, cas: BlobStore, request: FetchRequest) -> FetchOutcome | None:
        for checksum in request.qualifiers.checksums:
            digest = await self.index.get_by_checksum(request.instance, checksum, request.function)
            if digest is not None and await cas.has(digest):
                return FetchOutcome(request.uris[0], digest)
        return None

    def _check_supported(self, request: FetchRequest, supported: frozenset[str], what: str) -> None:
        unsupported = request.qualifiers.unsupported(supported)
        if unsupported:
            raise unsupported_error(unsupported, what)

    # -- origin ---------------------------------------------------------------------

    def _deadline(self, request: FetchRequest) -> Deadline:
        seconds = min(request.timeout or self.default_timeout, self.max_timeout)
        return Deadline(asyncio.get_running_loop().time() + seconds, seconds)

    async def _shared(self, kind: str, request: FetchRequest, start: Callable[[], Awaitable[FetchOutcome]]) -> FetchOutcome:
        """Run ``start`` as a task shared by identical requests; it outlives a cancelled caller."""
        if request.download_refusal is not None:
            raise request.download_refusal
        key = (kind, request.instance, request.uris, request.qualifiers.pairs, request.function)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(start())
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._finished(key, t))
        return await asyncio.shield(task)

    def _finished(self, key: tuple[object, ...], task: asyncio.Task[FetchOutcome]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        if isinstance(error, ReapiError):
            log.warning("asset fetch failed: %s", error)  # also raised to every waiting caller
        else:
            log.error("asset fetch failed unexpectedly", exc_info=error)

    async def _attempt(self, uri: str, deadline: Deadline, work: Callable[[], Awaitable[T]]) -> T:
        """Run one URI's work before ``deadline``; DEADLINE_EXCEEDED names the URI."""
        if asyncio.get_running_loop().time() >= deadline.at:
            raise DeadlineExceeded(f"{redact_uri(uri)}: not tried, the {deadline.seconds:g}s fetch timeout had passed")
        try:
            async with asyncio.timeout_at(deadline.at) as scope:
                return await work()
        except TimeoutError:
            if scope.expired():
                raise DeadlineExceeded(f"{redact_uri(uri)}: no complete answer within the {deadline.seconds:g}s fetch timeout") from None
            raise Unavailable(f"{redact_uri(uri)}: timed out") from None

    def _downloader(self, uri: str) -> Downloader:
        scheme = urlsplit(uri).scheme.lower()
        downloader = self.downloaders.get(scheme)
        if downloader is None:
            raise NotFound(f"{redact_uri(uri)}: nothing was pushed under this URI, and {scheme or 'scheme-less'} URIs cannot be fetched")
        return downloader

    async def _blob_from_origin(self, cas: BlobStore, request: FetchRequest, deadline: Deadline) -> FetchOutcome:
        started = self.clock()
        failures: list[tuple[str, ReapiError]] = []
        for i, uri in enumerate(request.uris):
            headers = request.qualifiers.headers_for(i, uri)
            try:
                downloader = self._downloader(uri)
                ingested = await self._attempt(
                    uri, deadline,
                    lambda: downloader.download(uri, headers, cas, request.function, request.qualifiers.checksums),
                )
            except ReapiError as err:
                log.info("asset fetch: %s", err)
                failures.append((uri, err))
                if isinstance(err, DeadlineExceeded):
                    break
                continue
            await self.index.put([self._key(request, BLOB, uri)], AssetEntry(BLOB, ingested.digest, fetched_at=started))
            verified = [Checksum(name, hex) for name, hex in ingested.hashes.items() if name in SRI_ALGORITHMS]
            await self.index.put_checksums(request.instance, verified, ingested.digest)
            log.info("asset fetch: %s -> %s", redact_uri(uri), ingested.digest)
            return FetchOutcome(uri, ingested.digest)
        return _combined(failures)

    async def _directory_from_origin(self, cas: BlobStore, request: FetchRequest) -> FetchOutcome:
        started = self.clock()
        deadline = self._deadline(request)
        q = request.qualifiers
        fetched = await (self._git_tree if q.is_git else self._archive_tree)(cas, request, deadline)
        if isinstance(fetched, FetchOutcome):
            return fetched  # every URI failed
        uri, tree, extra = fetched
        root = tree.subdirectory(q.directory)
        if root is None:
            return FetchOutcome(uri, error=NotFound(f"{redact_uri(uri)}: has no directory {q.directory!r}"))
        keys = [self._key(request, DIRECTORY, uri)]
        if q.vcs_branch and not q.vcs_commit:
            # The branch resolved to a commit: a later fetch of that commit is a hit too.
            by_commit = tuple(sorted([p for p in q.pairs if p[0] != VCS_BRANCH] + list(extra)))
            keys.append(self._key(request, DIRECTORY, uri, by_commit))
        await self.index.put(keys, AssetEntry(DIRECTORY, root, fetched_at=started))
        log.info("asset fetch: %s -> directory %s", redact_uri(uri), root)
        return FetchOutcome(uri, root, extra_qualifiers=extra)

    async def _git_tree(self, cas: BlobStore, request: FetchRequest, deadline: Deadline) -> _Tree | FetchOutcome:
        q = request.qualifiers
        failures: list[tuple[str, ReapiError]] = []
        for i, uri in enumerate(request.uris):
            headers = q.headers_for(i, uri)
            try:
                fetched = await self._attempt(
                    uri, deadline, lambda: self.git.fetch(uri, headers, q.vcs_commit, q.vcs_branch, cas, request.function)
                )
            except ReapiError as err:
                failures.append((uri, err))
                if isinstance(err, DeadlineExceeded):
                    break
                continue
            return uri, fetched.tree, ((VCS_COMMIT, fetched.commit),)
        return _combined(failures)

    async def _archive_tree(self, cas: BlobStore, request: FetchRequest, deadline: Deadline) -> _Tree | FetchOutcome:
        """Fetch the archive as a blob (cached like any blob), then unpack it."""
        archive_request = replace(request, qualifiers=request.qualifiers.without(DIRECTORY_QUALIFIER, RESOURCE_TYPE))
        archive = await self._from_index(cas, archive_request, BLOB) or await self._from_checksum(cas, archive_request)
        if archive is None:
            archive = await self._blob_from_origin(cas, archive_request, deadline)
        if archive.digest is None:
            return archive
        uri, digest = archive.uri, archive.digest
        try:
            tree = await self._attempt(uri, deadline, lambda: self.unpacker.unpack(cas, digest, request.function, redact_uri(uri)))
        except ReapiError as err:
            return FetchOutcome(uri, error=err)
        return uri, tree, ()


def _check_uris(request: FetchRequest) -> None:
    if not request.uris:
        raise InvalidArgument("uris: at least one URI is required")
    for i, uri in enumerate(request.uris):
        if not uri.strip():
            raise InvalidArgument(f"uris[{i}] is empty")
