"""Which origins the server may fetch from, and how much.

The fetch service makes outgoing requests on behalf of its clients, so an operator
decides where it may go: schemes (``file`` is off unless named), host allow and
deny lists, a size cap, a redirect limit, and whether private networks are
reachable. Every redirect target is checked again, so a permitted host cannot
bounce the server somewhere forbidden. This class judges names; the addresses
they resolve to are judged by ``NetworkGuard`` (server/assets/guard.py).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from cas.errors import InvalidArgument, PermissionDenied
from server.assets.addresses import canonical_host
from server.assets.uris import redact_uri

DEFAULT_SCHEMES = frozenset({"http", "https"})
DEFAULT_MAX_DOWNLOAD_SIZE = 16 << 30
DEFAULT_MAX_REDIRECTS = 5
# In allowed_hosts, "*" alone admits any host but names none: it lifts no address rule.
ANY_HOST = "*"


def _matches(host: str, patterns: tuple[str, ...]) -> bool:
    host = canonical_host(host)
    return any(fnmatch.fnmatchcase(host, canonical_host(p)) for p in patterns)


@dataclass(frozen=True)
class FetchPolicy:
    """Where fetches may go. Host patterns are exact names/addresses or ``*.example.com``."""

    allowed_schemes: frozenset[str] = DEFAULT_SCHEMES
    allowed_hosts: tuple[str, ...] = ()  # empty: any host not denied
    denied_hosts: tuple[str, ...] = ()
    max_download_size: int = DEFAULT_MAX_DOWNLOAD_SIZE
    max_redirects: int = DEFAULT_MAX_REDIRECTS
    allow_private_networks: bool = False  # loopback, RFC 1918, unique local, CGNAT

    @property
    def restricts_hosts(self) -> bool:
        return bool(self.allowed_hosts or self.denied_hosts)

    def host_denied(self, host: str) -> bool:
        return _matches(host, self.denied_hosts)

    def host_allowed(self, host: str) -> bool:
        if self.host_denied(host):
            return False
        return not self.allowed_hosts or _matches(host, self.allowed_hosts)

    def names_host(self, host: str) -> bool:
        """True if allowed_hosts lists ``host`` (a name or an address) by a pattern other than "*"."""
        return _matches(host, tuple(p for p in self.allowed_hosts if p.strip() != ANY_HOST))

    def check(self, uri: str) -> SplitResult:
        """The parsed URI if the policy permits fetching it; PERMISSION_DENIED otherwise."""
        try:
            parts = urlsplit(uri)
        except ValueError as exc:
            raise InvalidArgument(f"{redact_uri(uri)}: not a valid URI ({exc})") from None
        scheme = parts.scheme.lower()
        if scheme not in self.allowed_schemes:
            allowed = ", ".join(sorted(self.allowed_schemes))
            raise PermissionDenied(f"{redact_uri(uri)}: fetching {scheme or 'scheme-less'} URIs is not allowed here (allowed schemes: {allowed})")
        if scheme == "file":
            if parts.hostname not in (None, "", "localhost"):
                raise PermissionDenied(f"{redact_uri(uri)}: file URIs must name a local path")
            return parts
        host = parts.hostname
        if not host:
            raise InvalidArgument(f"{redact_uri(uri)}: the URI names no host")
        if not self.host_allowed(host):
            raise PermissionDenied(f"{redact_uri(uri)}: host {host!r} is not allowed by the fetch policy")
        return parts
