"""Downloads over HTTP(S), streamed into the CAS with bounded memory.

Redirects are followed by hand (at most ``policy.max_redirects``) so that every
hop is checked against the fetch policy again (names here, addresses by the
NetworkGuard: hosts written as addresses before the request, names inside the
client's resolver, after DNS), and credentials (Authorization,
Cookie) are dropped when a redirect leaves the origin, as browsers do; a GitHub
release that redirects to a signed S3 URL would otherwise fail. We ask for the
identity encoding and never decompress: the checksum names the bytes of the file.

Origin answers become ReapiErrors whose message names the (redacted) URI:
404/410 NOT_FOUND, 401/403 PERMISSION_DENIED, too large RESOURCE_EXHAUSTED,
5xx/429 and broken connections UNAVAILABLE, other statuses FAILED_PRECONDITION.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urljoin

import aiohttp

from cas.digest import DigestFunctionValue
from cas.errors import FailedPrecondition, NotFound, PermissionDenied, ReapiError, ResourceExhausted, Unavailable
from cas.store import BlobStore
from server.assets.guard import AddressRefused, NetworkGuard
from server.assets.ingest import Ingested, ingest
from server.assets.policy import FetchPolicy
from server.assets.resolver import GuardedResolver
from server.assets.spool import Spool
from server.assets.sri import Checksum
from server.assets.uris import origin_of, port_of, redact_uri

log = logging.getLogger("reapi.assets")

CHUNK_SIZE = 1 << 20
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Headers that carry credentials: not forwarded when a redirect changes origin.
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
USER_AGENT = "reapi-remote-asset"


def new_session(guard: NetworkGuard) -> aiohttp.ClientSession:
    """The shared client session: no overall timeout (the fetcher sets deadlines), no env
    proxies, and every name resolved through ``guard`` (no DNS cache: each connection's
    addresses are checked when it is made)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(resolver=GuardedResolver(guard), use_dns_cache=False),
        timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_read=None, sock_connect=None),
        auto_decompress=False,
        read_bufsize=CHUNK_SIZE,
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
    )


def status_error(status: int, reason: str, uri: str) -> ReapiError:
    where = f"{redact_uri(uri)}: the origin answered HTTP {status} {reason}".rstrip()
    if status in (404, 410):
        return NotFound(where)
    if status in (401, 403, 407):
        return PermissionDenied(where)
    if status == 429 or status >= 500:
        return Unavailable(where)
    return FailedPrecondition(where)


def refused(url: str, first: str, reason: str) -> PermissionDenied:
    hop = f" (redirected from {redact_uri(first)})" if url != first else ""
    return PermissionDenied(f"fetch of {redact_uri(url)}{hop} refused: {reason}")


class HttpDownloader:
    """Fetches one URI into the CAS, following (re-checked) redirects."""

    def __init__(self, session: aiohttp.ClientSession, policy: FetchPolicy, guard: NetworkGuard, spool: Spool) -> None:
        self.session = session
        self.policy = policy
        self.guard = guard
        self.spool = spool

    async def download(
        self,
        uri: str,
        headers: Mapping[str, str],
        cas: BlobStore,
        function: DigestFunctionValue,
        checksums: tuple[Checksum, ...] = (),
    ) -> Ingested:
        url = uri
        current_headers = dict(headers)
        for hop in range(self.policy.max_redirects + 1):
            parts = self.policy.check(url)
            try:
                self.guard.check_literal(parts.hostname or "", port_of(parts))
                async with self.session.get(url, headers=current_headers, allow_redirects=False) as response:
                    if response.status in REDIRECT_STATUSES and "Location" in response.headers:
                        target = urljoin(url, response.headers["Location"])
                        if origin_of(target) != origin_of(url):
                            current_headers = {k: v for k, v in current_headers.items() if k.lower() not in CREDENTIAL_HEADERS}
                        log.info("asset fetch: %s redirects to %s", redact_uri(url), redact_uri(target))
                        url = target
                        continue
                    if response.status != 200:
                        raise status_error(response.status, response.reason or "", url)
                    size = response.content_length
                    if size is not None and size > self.policy.max_download_size:
                        raise ResourceExhausted(
                            f"{redact_uri(url)}: {size} bytes is over the {self.policy.max_download_size}-byte download limit"
                        )
                    return await ingest(
                        self._body(response, url), cas, self.spool, function, checksums, expected_size=size, source=redact_uri(url)
                    )
            except AddressRefused as refusal:
                raise refused(url, uri, refusal.reason) from None
            except aiohttp.InvalidURL:
                raise FailedPrecondition(f"{redact_uri(url)}: not a valid URL") from None
            except (aiohttp.ClientError, OSError) as exc:
                # aiohttp's messages name host and port, never the user info or path.
                raise Unavailable(f"{redact_uri(url)}: {type(exc).__name__}: {exc}") from None
        raise FailedPrecondition(f"{redact_uri(uri)}: more than {self.policy.max_redirects} redirects")

    async def _body(self, response: aiohttp.ClientResponse, url: str) -> AsyncIterator[bytes]:
        limit = self.policy.max_download_size
        received = 0
        async for chunk in response.content.iter_chunked(CHUNK_SIZE):
            received += len(chunk)
            if received > limit:
                raise ResourceExhausted(f"{redact_uri(url)}: the download passed the {limit}-byte limit")
            yield chunk
