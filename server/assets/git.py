"""Fetch a git repository at a commit or branch into a Directory tree, with the git CLI.

Steps, in a scratch directory under the spool directory:

1. ``git init --bare`` and ``git fetch --depth=1 <uri> <commit|refs/heads/branch|HEAD>``;
   servers that cannot serve shallow or by-id fetches (the dumb HTTP protocol, old
   servers) get a full fetch instead.
2. ``git ls-tree -r`` lists the commit's files; ``git cat-file --batch`` streams
   their contents to the CAS through a ThreadUploader. Nothing is checked out, so
   no file is written for each entry of the repository.

Git runs with no user or system configuration, no prompts, only the schemes the
fetch policy allows (``protocol.allow``), and no redirects when the policy limits
hosts (git cannot re-check each hop). Header qualifiers become
``http.extraHeader`` settings passed in the environment, not on the command line,
so other local users cannot read them from the process list. Submodules are not
fetched (their entries are left out).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cas.digest import Digest, DigestFunctionValue
from cas.errors import NotFound, PermissionDenied, ReapiError, Unavailable
from cas.store import BlobStore
from server.assets.archive import store_directories
from server.assets.policy import FetchPolicy
from server.assets.spool import Spool
from server.assets.tree_builder import BuiltTree, TreeBuilder
from server.assets.uploader import ThreadUploader
from server.assets.uris import redact_uri

log = logging.getLogger("reapi.assets")

SMALL_FILE = 1 << 20
_NOT_FOUND_HINTS = ("not found", "does not appear to be a git repository", "couldn't find remote ref", "no such remote ref", "404")
_DENIED_HINTS = ("authentication failed", "could not read username", "terminal prompts disabled", "401", "403", "permission denied")
_NO_SHALLOW_HINTS = ("shallow", "dumb http transport", "not our ref", "unadvertised object", "allowreachablesha1inwant")


@dataclass(frozen=True)
class GitTree:
    tree: BuiltTree
    commit: str


class GitFailed(Exception):
    def __init__(self, stderr: str) -> None:
        super().__init__(stderr)
        self.stderr = stderr


class GitFetcher:
    """Runs ``git`` to turn (uri, commit or branch) into a tree in the CAS."""

    def __init__(self, spool: Spool, policy: FetchPolicy, max_unpacked_size: int, max_entries: int, git: str = "git") -> None:
        self.spool = spool
        self.policy = policy
        self.max_unpacked_size = max_unpacked_size
        self.max_entries = max_entries
        self.git = git

    def _env(self, home: str, headers: Mapping[str, str]) -> dict[str, str]:
        config = [("protocol.allow", "never")]
        config += [(f"protocol.{scheme}.allow", "always") for scheme in sorted(self.policy.allowed_schemes)]
        config += [("http.extraHeader", f"{name}: {value}") for name, value in headers.items()]
        if self.policy.restricts_hosts:
            config.append(("http.followRedirects", "false"))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": home,
            "XDG_CONFIG_HOME": home,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "false",
            "GIT_SSH_COMMAND": "ssh -o BatchMode=yes",
            "LC_ALL": "C",
            "GIT_CONFIG_COUNT": str(len(config)),
        }
        for i, (key, value) in enumerate(config):
            env[f"GIT_CONFIG_KEY_{i}"] = key
            env[f"GIT_CONFIG_VALUE_{i}"] = value
        return env

    async def _git(self, env: Mapping[str, str], *args: str) -> str:
        """Run git; its stdout, or GitFailed with its stderr. Killed if the caller is cancelled."""
        process = await asyncio.create_subprocess_exec(
            self.git, *args, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            stdout, stderr = await process.communicate()
        except BaseException:
            if process.returncode is None:
                os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
            raise
        if process.returncode != 0:
            raise GitFailed(stderr.decode("utf-8", "replace"))
        return stdout.decode("utf-8", "replace")

    def _error(self, uri: str, failure: GitFailed) -> ReapiError:
        text = failure.stderr.replace(uri, redact_uri(uri)).strip()
        lines = [line for line in text.splitlines() if line.strip()]
        detail = " / ".join(lines[-3:]) or "git failed"
        lowered = text.lower()
        message = f"{redact_uri(uri)}: git fetch failed: {detail}"
        if any(h in lowered for h in _DENIED_HINTS):
            return PermissionDenied(message)
        if any(h in lowered for h in _NOT_FOUND_HINTS):
            return NotFound(message)
        return Unavailable(message)

    async def fetch(
        self, uri: str, headers: Mapping[str, str], commit: str, branch: str, cas: BlobStore, function: DigestFunctionValue
    ) -> GitTree:
        self.policy.check(uri)
        with self.spool.temporary_directory() as scratch:
            env = self._env(scratch, headers)
            repo = str(Path(scratch) / "repo.git")
            await self._git(env, "init", "--bare", "--quiet", repo)
            ref = commit or (f"refs/heads/{branch}" if branch else "HEAD")
            try:
                await self._fetch(env, repo, uri, ref, commit)
                resolved = commit or (await self._git(env, "-C", repo, "rev-parse", "--verify", "FETCH_HEAD^{commit}")).strip()
            except GitFailed as failure:
                raise self._error(uri, failure) from None
            tree = await self._read_tree(env, repo, resolved, cas, function, redact_uri(uri))
        return GitTree(tree, resolved)

    async def _fetch(self, env: Mapping[str, str], repo: str, uri: str, ref: str, commit: str) -> None:
        base = ("-C", repo, "fetch", "--quiet", "--no-tags")
        try:
            await self._git(env, *base, "--depth=1", "--", uri, ref)
            return
        except GitFailed as failure:
            # A shallow fetch can fail where a full one works; anything else is final
            # unless we look for a commit, which a full fetch of every ref may still find.
            if not commit and not any(h in failure.stderr.lower() for h in _NO_SHALLOW_HINTS):
                raise
        try:
            await self._git(env, *base, "--", uri, ref)
            return
        except GitFailed:
            if not commit:
                raise
        # The server will not hand out a commit by id: fetch every branch and tag, then look.
        await self._git(env, *base, "--", uri, "+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*")
        try:
            await self._git(env, "-C", repo, "cat-file", "-e", f"{commit}^{{commit}}")
        except GitFailed:
            raise GitFailed(f"commit {commit} not found in the repository") from None

    async def _read_tree(
        self, env: Mapping[str, str], repo: str, commit: str, cas: BlobStore, function: DigestFunctionValue, source: str
    ) -> BuiltTree:
        listing = await self._git(env, "-C", repo, "ls-tree", "-r", "-z", "--full-tree", commit)
        entries = [_parse_ls_tree(record) for record in listing.split("\0") if record]
        uploader = ThreadUploader(
            cas, asyncio.get_running_loop(), self.spool, function, self.max_unpacked_size, self.max_entries, what=source
        )
        try:
            tree = await asyncio.to_thread(self._store_entries, env, repo, entries, uploader, function)
        finally:
            uploader.cancel()
        await store_directories(cas, tree)
        return tree

    def _store_entries(
        self, env: Mapping[str, str], repo: str, entries: Sequence[tuple[str, str, str, str]], uploader: ThreadUploader,
        function: DigestFunctionValue,
    ) -> BuiltTree:
        builder = TreeBuilder(function)
        cat = subprocess.Popen(
            [self.git, "-C", repo, "cat-file", "--batch"], env=dict(env), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert cat.stdin is not None and cat.stdout is not None
        by_object: dict[str, Digest] = {}
        try:
            for mode, kind, oid, path in entries:
                uploader.count_entry()
                if kind != "blob":
                    log.info("git: skipping %s %s at %r (submodules are not fetched)", kind, oid[:12], path)
                    continue
                cat.stdin.write(f"{oid}\n".encode())
                cat.stdin.flush()
                header = cat.stdout.readline().split()
                size = int(header[2])
                if mode == "120000":
                    target = cat.stdout.read(size).decode("utf-8", "surrogateescape")
                    cat.stdout.read(1)
                    builder.add_symlink(path, target)
                    continue
                cached = by_object.get(oid)
                if cached is not None:
                    cat.stdout.read(size + 1)
                    digest = cached
                elif size <= SMALL_FILE:
                    digest = uploader.put(cat.stdout.read(size))
                    cat.stdout.read(1)
                else:
                    digest = uploader.put_stream(cat.stdout.read, size)
                    cat.stdout.read(1)
                by_object[oid] = digest
                builder.add_file(path, digest, executable=mode == "100755")
            uploader.flush()
        finally:
            cat.stdin.close()
            cat.kill()
            cat.wait()
        return builder.build()


def _parse_ls_tree(record: str) -> tuple[str, str, str, str]:
    """'<mode> <type> <oid>\\t<path>' -> (mode, type, oid, path)."""
    meta, _, path = record.partition("\t")
    mode, kind, oid = meta.split()
    return mode, kind, oid, path
