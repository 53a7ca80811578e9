"""Refuse to listen beyond this machine without TLS and authentication.

A cache anyone on the network can write to serves them everyone's builds, so a
non-loopback address needs both TLS (or tokens travel in clear text) and
authentication, unless the operator says ``[server] allow_insecure = true`` (a
trusted network), which is logged as a warning. Loopback stays as it is: the
zero-config server needs neither.
"""

from __future__ import annotations

import ipaddress
import logging

from cas.config import ConfigError

log = logging.getLogger("reapi.server.auth")


def listen_host(listen: str) -> str:
    """``HOST:PORT`` / ``[v6]:PORT`` / ``:PORT`` -> HOST (brackets removed)."""
    if listen.startswith("unix:"):
        return "unix"
    host = listen.rsplit(":", 1)[0] if ":" in listen else listen
    return host.strip("[]")


def is_loopback(listen: str) -> bool:
    host = listen_host(listen)
    if host in ("localhost", "unix"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name or an empty host (every address)


def check_exposure(listen: str, tls: bool, auth: bool, allow_insecure: bool) -> None:
    """ConfigError (or a warning, when allowed) for an unprotected non-loopback address."""
    if is_loopback(listen) or (tls and auth):
        return
    missing = " and ".join(what for what, present in (("TLS", tls), ("authentication", auth)) if not present)
    if allow_insecure:
        log.warning("listening on %s without %s (allow_insecure = true): anyone who can reach the port "
                    "can %s", listen, missing, "read and overwrite cached results" if not auth else "read tokens in transit")
        return
    raise ConfigError(
        f"refusing to listen on {listen} without {missing}: anyone who can reach it could "
        + ("read and overwrite cached results" if not auth else "read the tokens clients send in clear text")
        + ". Set [server.tls] cert/key (--tls-cert/--tls-key) and [server.auth] (--auth-tokens), or listen on "
        "127.0.0.1, or set [server] allow_insecure = true for a trusted network"
    )
