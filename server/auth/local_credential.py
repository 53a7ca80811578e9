"""The credential the zero-config server gives its own worker when authentication is on.

A random token, known only to this server process and its worker: registered in
memory as the identity ``local-worker`` (permission ``worker`` on every instance) and
handed over in a file readable only by this user, in a private directory that is
removed when the server stops. With TLS on, the worker connects over a Unix socket in
that directory instead of the TLS port: the server's certificate may name a host that
is not this one, and a client certificate could not be had, while the socket reaches
nobody else.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from server.auth.permissions import EVERY_INSTANCE, Identity, Permission
from server.auth.tokens import TokenTable

LOCAL_WORKER = "local-worker"


@dataclass
class LocalWorkerCredential:
    directory: Path
    token_file: Path | None
    socket_path: Path | None

    @property
    def socket_address(self) -> str | None:
        return f"unix:{self.socket_path}" if self.socket_path is not None else None

    def worker_args(self) -> list[str]:
        return ["--token-file", str(self.token_file)] if self.token_file is not None else []

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def make_local_credential(tokens: TokenTable | None, own_socket: bool) -> LocalWorkerCredential:
    """A token added to ``tokens`` (if authentication is on), a socket path if ``own_socket``."""
    directory = Path(tempfile.mkdtemp(prefix="reapi-local-worker-"))  # mode 0700
    token_file = None
    if tokens is not None:
        token = secrets.token_urlsafe(32)
        # Its own method: a token-file entry that happens to be named "local-worker" is someone else.
        tokens.add(token, Identity(LOCAL_WORKER, frozenset({Permission.WORKER}), EVERY_INSTANCE, method="built-in"))
        token_file = directory / "token"
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token)
    return LocalWorkerCredential(directory, token_file, directory / "worker.sock" if own_socket else None)
