"""Token files for servers under test: the tokens stay in the test, the file holds hashes.

    tokens = TokenFile(tmp_path / "tokens.toml")
    ci = tokens.add("ci", ["read", "write", "ac-write", "execute"])   # returns the token
    server config: [server.auth] tokens = str(tokens.path)
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from tests.support import toml_writer


def bearer(token: str) -> tuple[tuple[str, str]]:
    """gRPC call metadata carrying ``token``."""
    return (("authorization", f"Bearer {token}"),)


class TokenFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: list[dict[str, object]] = []

    def add(self, name: str, permissions: list[str], instances: list[str] | None = None,
            token: str | None = None) -> str:
        token = token or f"{name}-{secrets.token_urlsafe(24)}"
        entry: dict[str, object] = {"name": name, "sha256": hashlib.sha256(token.encode()).hexdigest(),
                                    "permissions": permissions}
        if instances is not None:
            entry["instances"] = instances
        self.entries.append(entry)
        self.write()
        return token

    def remove(self, name: str) -> None:
        self.entries = [e for e in self.entries if e["name"] != name]
        self.write()

    def write(self) -> None:
        """Replace the file atomically, as an operator's deploy tool would."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(toml_writer.dumps({"token": self.entries}))
        os.replace(temporary, self.path)


def write_token_file(path: Path, token: str) -> Path:
    """A worker's token file (the token itself), readable by this user only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path
