"""One-line errors for what stops a server from starting, with exit code 2.

A port taken by another process or a store directory locked by one is not a bug in
reapi and needs no traceback: the command prints the message and exits 2.
"""

from __future__ import annotations

import errno
import socket

from cas.cli import StartupError

__all__ = ["StartupError", "bind_error", "bind_reason", "probe_bind"]


def bind_reason(err: OSError) -> str:
    if err.errno == errno.EADDRINUSE:
        return "the address is already in use (another reapi-server, or another program, holds the port)"
    return err.strerror or str(err)


def bind_error(what: str, address: str, err: OSError) -> StartupError:
    return StartupError(f"cannot listen on {address} for {what}: {bind_reason(err)}")


def probe_bind(address: str) -> str | None:
    """Why ``address`` cannot be bound, asked of the OS; None if it can be.

    gRPC's own bind error says only that binding failed, not why."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return f"{address!r} is not HOST:PORT"
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # As gRPC binds: connections of an earlier server in TIME_WAIT do not block it,
            # a socket listening there does.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, int(port)))
            probe.listen(1)
    except OSError as err:
        return bind_reason(err)
    return None
