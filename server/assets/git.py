"""Fetch a git repository at a commit or branch into a Directory tree, with the git CLI.

Steps, in a scratch directory under the spool directory:

1. ``git init --bare`` and ``git fetch --depth=1 <uri> <commit|refs/heads/branch|HEAD>``;
   servers that cannot serve shallow or by-id fetches (the dumb HTTP protocol, old
   servers) get a full fetch instead.
2. ``git ls-tree -r`` lists the commit's files; ``git cat-file --batch`` streams
   their contents to the CAS through a ThreadUploader. Nothing is checked out, so
   no file is written for each entry of the repository.

Where git may connect, and how much it may download, is decided by
server/assets/git_transport.py (addresses checked after DNS and pinned, only the
allowed schemes, no redirects, a transfer limit). Header qualifiers become
``http.extraHeader`` settings passed in the environment, not on the command line,
so other local users cannot read them from the process list. Submodules are not
fetched (their entries are left out). The listing is streamed, so a tree with
millions of entries (a "git bomb") stops at the entry limit without being held
in memory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cas.digest import Digest, DigestFunctionValue
from cas.errors import FailedPrecondition, NotFound, PermissionDenied, ReapiError, Unavailable
from cas.store import BlobStore
from server.assets.archive import store_directories
from server.assets.git_transport import GitTarget, GitTransferWatch, GitTransport, git_version
from server.assets.guard import NetworkGuard
from server.assets.limits import UnpackLimits
from server.assets.spool import Spool
from server.assets.tree_builder import BuiltTree, TreeBuilder
from server.assets.uploader import ThreadUploader
from server.assets.uris import redact_uri

log = logging.getLogger("reapi.assets")

SMALL_FILE = 1 << 20
_NOT_FOUND_HINTS = ("not found", "does not appear to be a git repository", "couldn't find remote ref", "no such remote ref")
_DENIED_HINTS = ("authentication failed", "could not read username", "terminal prompts disabled", "permission denied")
# HTTP statuses as git reports them: a bare "401" would also match a port such as 44017 in the URL.
_DENIED_STATUS = re.compile(r"returned error: 40[13]\b")
_NOT_FOUND_STATUS = re.compile(r"returned error: 404\b")
_REDIRECTED = re.compile(r"returned error: 30[12378]\b")
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

    def __init__(self, spool: Spool, guard: NetworkGuard, limits: UnpackLimits | None = None, git: str = "git") -> None:
        self.spool = spool
        self.guard = guard
        self.limits = limits or UnpackLimits()
        self.git = git
        self._transport: GitTransport | None = None

    async def transport(self) -> GitTransport:
        """The transport, once the git version (which decides how names are pinned) is known."""
        if self._transport is None:
            try:
                version = git_version(await self._git({"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, "--version"))
            except (GitFailed, OSError):
                version = (0, 0)
            self._transport = GitTransport(self.guard, version)
        return self._transport

    async def _git(self, env: Mapping[str, str], *args: str, watch: GitTransferWatch | None = None) -> str:
        """Run git; its stdout, or GitFailed with its stderr. Killed if the caller is cancelled
        or (with ``watch``) when its transfer passes the limit."""
        process = await asyncio.create_subprocess_exec(
            self.git, *args, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,
        )
        watcher = asyncio.ensure_future(watch.watch(process)) if watch is not None else None
        try:
            stdout, stderr = await process.communicate()
        except BaseException:
            if process.returncode is None:
                os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
            raise
        finally:
            if watcher is not None:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
        if watch is not None and watch.exceeded:
            raise watch.error()
        if process.returncode != 0:
            raise GitFailed(stderr.decode("utf-8", "replace"))
        return stdout.decode("utf-8", "replace")

    def _error(self, uri: str, failure: GitFailed, pinned_url: str) -> ReapiError:
        text = failure.stderr.replace(pinned_url, redact_uri(pinned_url)).replace(uri, redact_uri(uri)).strip()
        lines = [line for line in text.splitlines() if line.strip()]
        detail = " / ".join(lines[-3:]) or "git failed"
        lowered = text.lower()
        message = f"{redact_uri(uri)}: git fetch failed: {detail}"
        if _REDIRECTED.search(lowered):
            return FailedPrecondition(f"{message} (git's redirects are not followed, since the server cannot check each hop: "
                                      "fetch the repository by its final URL)")
        if _DENIED_STATUS.search(lowered) or any(h in lowered for h in _DENIED_HINTS):
            return PermissionDenied(message)
        if _NOT_FOUND_STATUS.search(lowered) or any(h in lowered for h in _NOT_FOUND_HINTS):
            return NotFound(message)
        return Unavailable(message)

    async def fetch(
        self, uri: str, headers: Mapping[str, str], commit: str, branch: str, cas: BlobStore, function: DigestFunctionValue
    ) -> GitTree:
        parts = self.guard.policy.check(uri)
        transport = await self.transport()
        with self.spool.temporary_directory() as scratch:
            target = await transport.target(uri, parts, scratch, headers)
            watch = GitTransferWatch(Path(scratch), self.guard.policy.max_download_size, redact_uri(uri))
            repo = str(Path(scratch) / "repo.git")
            await self._git(target.env, "init", "--bare", "--quiet", repo)
            ref = commit or (f"refs/heads/{branch}" if branch else "HEAD")
            try:
                await self._fetch(target, repo, ref, commit, watch)
                watch.check()
                resolved = commit or (await self._git(target.env, "-C", repo, "rev-parse", "--verify", "FETCH_HEAD^{commit}")).strip()
            except GitFailed as failure:
                raise self._error(uri, failure, target.url) from None
            tree = await self._read_tree(target.env, repo, resolved, cas, function, redact_uri(uri))
        return GitTree(tree, resolved)

    async def _fetch(self, target: GitTarget, repo: str, ref: str, commit: str, watch: GitTransferWatch) -> None:
        env, uri = target.env, target.url
        base = ("-C", repo, "fetch", "--quiet", "--no-tags")
        try:
            await self._git(env, *base, "--depth=1", "--", uri, ref, watch=watch)
            return
        except GitFailed as failure:
            # A shallow fetch can fail where a full one works; anything else is final
            # unless we look for a commit, which a full fetch of every ref may still find.
            if not commit and not any(h in failure.stderr.lower() for h in _NO_SHALLOW_HINTS):
                raise
        try:
            await self._git(env, *base, "--", uri, ref, watch=watch)
            return
        except GitFailed:
            if not commit:
                raise
        # The server will not hand out a commit by id: fetch every branch and tag, then look.
        await self._git(env, *base, "--", uri, "+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*", watch=watch)
        try:
            await self._git(env, "-C", repo, "cat-file", "-e", f"{commit}^{{commit}}")
        except GitFailed:
            raise GitFailed(f"commit {commit} not found in the repository") from None

    async def _read_tree(
        self, env: Mapping[str, str], repo: str, commit: str, cas: BlobStore, function: DigestFunctionValue, source: str
    ) -> BuiltTree:
        uploader = ThreadUploader(cas, asyncio.get_running_loop(), self.spool, function, self.limits.budget(cas), what=source)
        try:
            tree = await asyncio.to_thread(self._store_entries, env, repo, commit, uploader, function)
        finally:
            uploader.cancel()
        await store_directories(cas, tree)
        return tree

    def _store_entries(
        self, env: Mapping[str, str], repo: str, commit: str, uploader: ThreadUploader, function: DigestFunctionValue
    ) -> BuiltTree:
        """Blocking: stream ``git ls-tree`` and feed each file's content from ``git cat-file --batch``."""
        builder = TreeBuilder(function)
        listing = subprocess.Popen(
            [self.git, "-C", repo, "ls-tree", "-r", "-z", "--full-tree", commit], env=dict(env),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        cat = subprocess.Popen(
            [self.git, "-C", repo, "cat-file", "--batch"], env=dict(env), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert listing.stdout is not None and listing.stderr is not None and cat.stdin is not None and cat.stdout is not None
        by_object: dict[str, Digest] = {}
        try:
            for record in _records(listing.stdout):
                mode, kind, oid, path = _parse_ls_tree(record)
                uploader.count_entry()
                if kind != "blob":
                    log.info("git: skipping %s %s at %r (submodules are not fetched)", kind, oid[:12], path)
                    continue
                cached = by_object.get(oid)
                if cached is not None and mode != "120000":
                    uploader.count_copy(cached.size_bytes)  # stored once, but every copy counts
                    builder.add_file(path, cached, executable=mode == "100755")
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
                uploader.ensure_room(size)
                if size <= SMALL_FILE:
                    digest = uploader.put(cat.stdout.read(size))
                else:
                    digest = uploader.put_stream(cat.stdout.read, size)
                cat.stdout.read(1)
                by_object[oid] = digest
                builder.add_file(path, digest, executable=mode == "100755")
            if listing.wait() != 0:
                raise GitFailed(listing.stderr.read().decode("utf-8", "replace"))
            uploader.flush()
        finally:
            for process in (listing, cat):
                process.kill()
                process.wait()
            cat.stdin.close()
            for stream in (listing.stdout, listing.stderr, cat.stdout):
                stream.close()
        return builder.build()


def _records(stream: IO[bytes]) -> Iterator[str]:
    """NUL-terminated records from ``stream`` as they arrive (the listing is never held whole)."""
    pending = b""
    while chunk := stream.read1(1 << 16):  # type: ignore[attr-defined]
        *records, pending = (pending + chunk).split(b"\0")
        for record in records:
            if record:
                yield record.decode("utf-8", "replace")
    if pending:
        yield pending.decode("utf-8", "replace")


def _parse_ls_tree(record: str) -> tuple[str, str, str, str]:
    """'<mode> <type> <oid>\\t<path>' -> (mode, type, oid, path)."""
    meta, _, path = record.partition("\t")
    mode, kind, oid = meta.split()
    return mode, kind, oid, path
