"""URI helpers that keep credentials out of logs and messages.

A download URL may carry a password (``https://user:token@host/``) or a signed
query string (S3, GCS); both are secrets. Anything we log or put in a status
message goes through ``redact_uri`` first.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit, urlunsplit

DEFAULT_PORTS = {"http": 80, "https": 443, "git": 9418, "ssh": 22}


def redact_uri(uri: str) -> str:
    """``uri`` without user info and query values: safe to log and to echo in errors."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable URI>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "..." if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def origin_of(uri: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) for deciding whether a redirect leaves the origin."""
    parts = urlsplit(uri)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port


def port_of(parts: SplitResult) -> int:
    """The port a connection for ``parts`` goes to: the URI's, else the scheme's default (0 if none)."""
    try:
        port = parts.port
    except ValueError:
        port = None  # out of range: the client that parses the URI reports it
    return port or DEFAULT_PORTS.get(parts.scheme.lower(), 0)
