"""Which origins the server may fetch from, and how much.

The fetch service makes outgoing requests on behalf of its clients, so an operator
decides where it may go: schemes (``file`` is off unless named), host allow and
deny lists, a size cap, and a redirect limit. Every redirect target is checked
again, so a permitted host cannot bounce the server somewhere forbidden.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from cas.errors import InvalidArgument, PermissionDenied
from server.assets.uris import redact_uri

DEFAULT_SCHEMES = frozenset({"http", "https"})
DEFAULT_MAX_DOWNLOAD_SIZE = 16 << 30
DEFAULT_MAX_REDIRECTS = 5


def _normal_host(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return host


@dataclass(frozen=True)
class FetchPolicy:
    """Where fetches may go. Host patterns are exact names/addresses or ``*.example.com``."""

    allowed_schemes: frozenset[str] = DEFAULT_SCHEMES
    allowed_hosts: tuple[str, ...] = ()  # empty: any host not denied
    denied_hosts: tuple[str, ...] = ()
    max_download_size: int = DEFAULT_MAX_DOWNLOAD_SIZE
    max_redirects: int = DEFAULT_MAX_REDIRECTS

    @property
    def restricts_hosts(self) -> bool:
        return bool(self.allowed_hosts or self.denied_hosts)

    def host_allowed(self, host: str) -> bool:
        host = _normal_host(host)
        if any(fnmatch.fnmatchcase(host, _normal_host(p)) for p in self.denied_hosts):
            return False
        return not self.allowed_hosts or any(fnmatch.fnmatchcase(host, _normal_host(p)) for p in self.allowed_hosts)

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
