"""Where a ``git fetch`` may connect, and how much it may bring back.

git resolves names and follows redirects by itself, so the checks the HTTP
downloader makes in-process are made here around the git command:

- The URI's host is resolved and every address checked by the NetworkGuard first;
  then git is pinned to those addresses: ``http.curloptResolve`` for http(s) (git
  2.37 or later), the address in the URL for ``git://``, ``ssh -o Hostname=`` (with
  ``HostKeyAlias`` keeping known_hosts by name) for ssh. A name that resolves
  elsewhere by the time git connects (DNS rebinding) is never looked up again.
- ``protocol.allow = never`` with only the allowed schemes switched on, so URLs like
  ``ext::sh -c ...`` or ``fd::`` and submodule-style transports never run; the
  fetch policy has already refused every scheme it does not list.
- ``http.followRedirects = false``: git's own HTTP client cannot re-check each hop,
  so a repository that redirects must be fetched by its final URL (this also stops
  the dumb protocol's http-alternates, which git treats as redirects).
- No user or system config, no prompts, no proxy from the environment.
- ``GitTransferWatch``: the bytes git writes under its scratch directory are
  limited by ``max_download_size``; git is killed once it passes it.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, urlunsplit

from cas.errors import PermissionDenied, ResourceExhausted
from server.assets.addresses import IPAddress, parse_address
from server.assets.guard import AddressRefused, NetworkGuard
from server.assets.limits import describe_size
from server.assets.uris import port_of, redact_uri

MIN_GIT_FOR_PINNING = (2, 37)  # http.curloptResolve
WATCH_INTERVAL = 0.2
_VERSION = re.compile(r"git version (\d+)\.(\d+)")


@dataclass(frozen=True)
class GitTarget:
    """The URL to give git and the environment to run it in."""

    url: str
    env: dict[str, str]


def git_version(output: str) -> tuple[int, int]:
    """(major, minor) from ``git --version``; (0, 0) if unreadable."""
    found = _VERSION.search(output)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def _host_for_url(address: IPAddress) -> str:
    return f"[{address}]" if address.version == 6 else str(address)


def _netloc_with(parts: SplitResult, host: str) -> str:
    user = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return f"{user}{host}:{parts.port}" if parts.port else f"{user}{host}"


class GitTransport:
    """Builds the pinned URL and locked-down environment for one git fetch."""

    def __init__(self, guard: NetworkGuard, version: tuple[int, int]) -> None:
        self.guard = guard
        self.version = version

    async def target(self, uri: str, parts: SplitResult, home: str, headers: Mapping[str, str]) -> GitTarget:
        """PERMISSION_DENIED naming the host, address and rule if git may not go there."""
        scheme = parts.scheme.lower()
        config = [("protocol.allow", "never")]
        config += [(f"protocol.{s}.allow", "always") for s in sorted(self.guard.policy.allowed_schemes)]
        config += [("http.followRedirects", "false")]
        config += [("http.extraHeader", f"{name}: {value}") for name, value in headers.items()]
        ssh = ["ssh", "-o", "BatchMode=yes"]
        url = uri
        if scheme != "file":
            host = parts.hostname or ""
            port = port_of(parts)
            try:
                addresses = await self.guard.resolve(host, port)
            except AddressRefused as refusal:
                raise PermissionDenied(f"fetch of {redact_uri(uri)} refused: {refusal.reason}") from None
            literal = parse_address(host) is not None
            if scheme in ("http", "https") and not literal:
                if self.version < MIN_GIT_FOR_PINNING:
                    have = ".".join(map(str, self.version))
                    raise PermissionDenied(
                        f"fetch of {redact_uri(uri)} refused: git {have} cannot be held to the checked addresses "
                        "(http.curloptResolve needs git 2.37 or later)"
                    )
                pinned = ",".join(_host_for_url(a) for a in addresses)
                config.append(("http.curloptResolve", f"{host}:{port}:{pinned}"))
            elif scheme == "git":
                url = urlunsplit(parts._replace(netloc=_netloc_with(parts, _host_for_url(addresses[0]))))
            elif scheme == "ssh":
                ssh += ["-o", f"Hostname={addresses[0]}", "-o", f"HostKeyAlias={host}"]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": home,
            "XDG_CONFIG_HOME": home,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "false",
            "GIT_SSH_COMMAND": shlex.join(ssh),
            "LC_ALL": "C",
            "GIT_CONFIG_COUNT": str(len(config)),
        }
        for i, (key, value) in enumerate(config):
            env[f"GIT_CONFIG_KEY_{i}"] = key
            env[f"GIT_CONFIG_VALUE_{i}"] = value
        return GitTarget(url, env)


def tree_size(root: Path) -> int:
    """Bytes of the files under ``root`` (files vanishing while we look are skipped)."""
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except OSError:
                pass
    return total


class GitTransferWatch:
    """Kills git's process group once its scratch directory holds more than ``limit`` bytes."""

    def __init__(self, scratch: Path, limit: int, source: str) -> None:
        self.scratch = scratch
        self.limit = limit
        self.source = source
        self.exceeded = False

    def error(self) -> ResourceExhausted:
        return ResourceExhausted(
            f"{self.source}: the git transfer passed the {describe_size(self.limit)} download limit ([assets] max_download_size)"
        )

    def check(self) -> None:
        """RESOURCE_EXHAUSTED if the scratch directory is over the limit now."""
        if tree_size(self.scratch) > self.limit:
            self.exceeded = True
            raise self.error()

    async def watch(self, process: asyncio.subprocess.Process) -> None:
        """Run while ``process`` runs; kill it when the transfer passes the limit."""
        while process.returncode is None:
            await asyncio.sleep(WATCH_INTERVAL)
            if await asyncio.to_thread(tree_size, self.scratch) > self.limit:
                self.exceeded = True
                if process.returncode is None:
                    os.killpg(process.pid, signal.SIGKILL)
                return
