"""Static bearer tokens: a TOML file of their sha256 hashes, re-read when it changes.

    [[token]]
    name = "ci"                                  # the identity, shown in logs
    sha256 = "<hex sha256 of the token string>"  # `printf %s "$TOKEN" | sha256sum`
    permissions = ["read", "write", "ac-write", "execute"]
    instances = ["*"]                            # instance-name prefixes; default every name

The file never holds a token, only its hash, so reading it gives nobody a credential.
It is looked at for changes at most every ``RELOAD_INTERVAL`` seconds.
Several entries may share a name (an old and a new token during a rotation). A file
that stops parsing is reported and ignored: the tokens read before stay in force until
it parses again. The zero-config server adds tokens of its own in memory (its worker's).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cas.config import ConfigError, check_known, read_table, read_toml
from cas.file_watch import FileWatch
from server.auth.permissions import ALL_INSTANCES, Identity, InstanceScope, parse_permissions

log = logging.getLogger("reapi.server.auth")

# How often the token file is looked at for changes, at most (a busy server would
# otherwise stat it on every call); a rotation takes effect within this.
RELOAD_INTERVAL = 0.5
# Tokens recently looked up, by the token itself: a hit skips hashing it again.
RECENT_LIMIT = 1024


@dataclass(frozen=True)
class TokenEntry:
    """One ``[[token]]`` of the file."""

    name: str
    sha256: str
    permissions: list[str] = field(default_factory=list)
    instances: list[str] = field(default_factory=lambda: [ALL_INSTANCES])

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name must not be empty")
        digest = self.sha256.lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"sha256 of {self.name!r} is not 64 hex digits (write the token's hash, never the token)")
        parse_permissions(self.permissions, f"token {self.name!r}")

    def identity(self) -> Identity:
        permissions = parse_permissions(self.permissions, f"token {self.name!r}")
        return Identity(self.name, permissions, InstanceScope(tuple(self.instances)), method="token")


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def read_token_file(path: Path) -> dict[bytes, Identity]:
    """sha256 -> identity; ConfigError naming the file and entry for any mistake."""
    data = read_toml(path)
    check_known(data.keys(), ["token"], f"{path}", what="section")
    entries = data.get("token", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: [[token]] must be an array of tables")
    out: dict[bytes, Identity] = {}
    for i, table in enumerate(entries):
        entry = read_table(TokenEntry, table, f"{path}: [[token]] #{i + 1}")
        key = bytes.fromhex(entry.sha256)
        if key in out:
            raise ConfigError(f"{path}: [[token]] #{i + 1} ({entry.name!r}) repeats the hash of {out[key].name!r}")
        out[key] = entry.identity()
    return out


class TokenTable:
    """Tokens from a file (optional) and tokens given in memory; ``lookup`` by the token."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._watch = FileWatch(path, min_interval=RELOAD_INTERVAL) if path is not None else None
        self._from_file: Mapping[bytes, Identity] = {}
        self._in_memory: dict[bytes, Identity] = {}
        self._recent: dict[str, Identity] = {}
        if path is not None:
            assert self._watch is not None
            self._watch.changed()
            self._from_file = read_token_file(path)  # a broken file at start is a config error
            log.info("token file %s: %s", path, self._summary())

    def add(self, token: str, identity: Identity) -> None:
        self._in_memory[token_hash(token)] = identity

    def lookup(self, token: str) -> Identity | None:
        if self._watch is not None and self._watch.changed():
            self._reload()
        identity = self._recent.get(token)
        if identity is not None:
            return identity
        key = token_hash(token)
        identity = self._in_memory.get(key) or self._from_file.get(key)
        if identity is not None:
            if len(self._recent) >= RECENT_LIMIT:
                self._recent.clear()
            self._recent[token] = identity
        return identity

    def _reload(self) -> None:
        assert self.path is not None
        try:
            self._from_file = read_token_file(self.path)
        except ConfigError as exc:
            log.error("token file not reloaded, the tokens read before stay in force: %s", exc)
            return
        self._recent.clear()
        log.info("token file %s reloaded: %s", self.path, self._summary())

    def _summary(self) -> str:
        names = sorted({identity.name for identity in self._from_file.values()})
        return f"{len(self._from_file)} tokens ({', '.join(names) or 'none'})"
