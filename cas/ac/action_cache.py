"""ActionCache: action results over an AC store and the CAS they point into.

Clients trust a cache hit blindly: Bazel downloads (or, with "build without the
bytes", just assumes) every output a result names. So ``get`` answers a hit only if
every blob the result references still exists (the completeness check), and the
check refreshes those blobs' lifetimes, so they outlive the hit by the CAS's
retention. It costs one ``find_missing`` for the plain blobs and the Tree blobs,
plus, for Tree blobs not seen before, one ``get_many`` and one more
``find_missing`` for the files inside them (parsed trees are remembered: content
addressed, they never change).

``put`` validates a result and stores it. Inline contents a client sends
(stdout_raw, stderr_raw, OutputFile.contents) are moved into the CAS and replaced
by digests, so stored results stay small and ``get`` inlines only what is asked.
The execution service uses this same class for Execute's cache lookup.

A repeat hit skips the parsing and digest checks of the first (the references of
results answered before are remembered with their stored bytes,
cas/ac/known_references.py) but never the question to the CAS; ``get_encoded``
answers such a hit with the stored bytes, unparsed.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from google.protobuf.message import DecodeError

from cas.ac.known_references import KnownReferences
from cas.ac.result_checks import check_action_result
from cas.digest import Digest, digests_from_protos
from cas.errors import InvalidArgument
from cas.lru import Lru
from cas.store import BlobStore
from cas.tree import TreeWalk, file_digests, parse_tree, tree_file_digests
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2

log = logging.getLogger("reapi.cas.action_cache")

# Total inline bytes one GetActionResult answer may carry: well under the 4 MiB
# message limit most clients keep, leaving room for the rest of the result.
DEFAULT_MAX_INLINE_BYTES = 1 << 20
# Parsed Tree blobs remembered (tree digest -> the file digests inside).
DEFAULT_TREE_CACHE_ENTRIES = 4096


class ActionCache:
    """Get and put action results with completeness checking and inlining."""

    def __init__(
        self,
        ac: BlobStore,
        cas: BlobStore,
        *,
        check_completeness: bool = True,
        max_inline_bytes: int = DEFAULT_MAX_INLINE_BYTES,
        tree_cache_entries: int = DEFAULT_TREE_CACHE_ENTRIES,
    ) -> None:
        self.ac = ac
        self.cas = cas
        self.check_completeness = check_completeness
        self.max_inline_bytes = max_inline_bytes
        self._tree_files: Lru[Digest, frozenset[Digest]] = Lru()  # by entries
        self._tree_cache_entries = tree_cache_entries
        self._known = KnownReferences()

    async def get(
        self,
        action_digest: Digest,
        *,
        inline_stdout: bool = False,
        inline_stderr: bool = False,
        inline_output_files: Collection[str] = (),
    ) -> re_pb2.ActionResult | None:
        """The cached result, or None on a miss (absent, unreadable or incomplete)."""
        checked = await self._checked(action_digest)
        if checked is None:
            return None
        data, result = checked
        if result is None:
            result = re_pb2.ActionResult.FromString(data)  # parsed before, when remembered
        if inline_stdout or inline_stderr or inline_output_files:
            await self._inline(result, action_digest.function, inline_stdout, inline_stderr, inline_output_files)
        return result

    async def get_encoded(self, action_digest: Digest) -> bytes | None:
        """The cached result serialized, as stored (nothing inlined), or None on a miss:
        what ``get`` answers, without parsing and serializing a result answered before."""
        checked = await self._checked(action_digest)
        return None if checked is None else checked[0]

    async def _checked(self, action_digest: Digest) -> tuple[bytes, re_pb2.ActionResult | None] | None:
        """The stored bytes of a complete result and, unless its references were known
        (cas/ac/known_references.py), the result parsed from them; None on a miss."""
        data = await self.ac.get_or_none(action_digest)
        if data is None:
            log.debug("action %s: no entry in %s", action_digest, self.ac.name)
            return None
        if type(data) is not bytes:
            data = bytes(data)
        known = self._known.blobs(action_digest, data)
        if known is not None:
            missing = await self.cas.find_missing(known) if self.check_completeness and known else set()
            if missing:
                self._log_incomplete(action_digest, missing)
                return None
            return data, None
        result = re_pb2.ActionResult()
        try:
            result.ParseFromString(data)
        except DecodeError:
            log.warning("action cache entry %s is not an ActionResult; answering a miss", action_digest)
            return None
        if self.check_completeness:
            try:
                missing, referenced = await self._missing_and_referenced(result, action_digest.function)
            except InvalidArgument as err:
                log.warning("action cache entry %s references bad digests (%s); answering a miss", action_digest, err)
                return None
            if missing:
                self._log_incomplete(action_digest, missing)
                return None
            if referenced is not None:
                self._known.remember(action_digest, data, referenced)
        else:
            self._known.remember(action_digest, data, ())  # parsed: nothing to ask the CAS
        return data, result

    @staticmethod
    def _log_incomplete(action_digest: Digest, missing: set[Digest]) -> None:
        log.debug("action %s: %d referenced blobs are gone (%s); answering a miss", action_digest, len(missing), sorted(map(str, missing))[:5])

    async def put(self, action_digest: Digest, result: re_pb2.ActionResult) -> re_pb2.ActionResult:
        """Validate ``result``, move inline contents into the CAS, store it; return what was stored."""
        function = action_digest.function
        check_action_result(result, function)
        stored = re_pb2.ActionResult()
        stored.CopyFrom(result)
        inline = _take_inline_contents(stored, function)
        if inline:
            failures = await self.cas.put_many(inline)
            if failures:
                digest, err = next(iter(failures.items()))
                raise err.with_context(f"storing inline content {digest} of the action result")
        await self.ac.put_bytes(action_digest, stored.SerializeToString(deterministic=True))
        return stored

    async def missing_blobs(self, result: re_pb2.ActionResult, function: int) -> set[Digest]:
        """Referenced blobs not in the CAS (refreshing those that are). Empty: complete."""
        return (await self._missing_and_referenced(result, function))[0]

    async def _missing_and_referenced(
        self, result: re_pb2.ActionResult, function: int
    ) -> tuple[set[Digest], list[Digest] | None]:
        """``missing_blobs``, and when the result is complete and names no root
        directory, every blob it references (what a repeat hit needs to ask about)."""
        blobs = set(digests_from_protos((f.digest for f in result.output_files), function))
        for field_name in ("stdout_digest", "stderr_digest"):
            if result.HasField(field_name):
                blobs.update(digests_from_protos([getattr(result, field_name)], function))
        trees: list[Digest] = []
        roots: list[Digest] = []
        for directory in result.output_directories:
            if directory.HasField("tree_digest"):
                trees.extend(digests_from_protos([directory.tree_digest], function))
            elif directory.HasField("root_directory_digest"):
                roots.extend(digests_from_protos([directory.root_directory_digest], function))
        unknown_trees = []
        for tree in trees:
            blobs.add(tree)
            files = self._tree_files.get(tree)
            if files is None:
                unknown_trees.append(tree)
            else:
                blobs.update(files)
        missing = await self.cas.find_missing(blobs)
        if missing:
            return missing, None
        more: set[Digest] = set()
        if unknown_trees:
            found = await self.cas.get_many(unknown_trees)
            for tree in unknown_trees:
                data = found.get(tree)
                if data is None:  # evicted since find_missing
                    return {tree}, None
                files = frozenset(tree_file_digests(parse_tree(tree, data), function))
                self._remember_tree(tree, files)
                more.update(files)
        for root in roots:
            walk = TreeWalk(self.cas, root)
            directories = [d async for _, d in walk.directories()]
            if walk.missing:
                return walk.missing, None
            more.update(file_digests(directories, function))
        missing = await self.cas.find_missing(more) if more else set()
        if missing or roots:
            return missing, None
        return missing, [*blobs, *more.difference(blobs)]

    def _remember_tree(self, tree: Digest, files: frozenset[Digest]) -> None:
        self._tree_files.put(tree, files)
        self._tree_files.evict(self._tree_cache_entries)

    async def _inline(
        self,
        result: re_pb2.ActionResult,
        function: int,
        inline_stdout: bool,
        inline_stderr: bool,
        inline_output_files: Collection[str],
    ) -> None:
        """Fill the asked-for inline fields, smallest first, within max_inline_bytes."""
        wanted: list[tuple[int, Digest, object]] = []  # (size, digest, target)
        if inline_stdout and result.HasField("stdout_digest") and not result.stdout_raw:
            digest = Digest.from_proto(result.stdout_digest, function)
            wanted.append((digest.size_bytes, digest, "stdout_raw"))
        if inline_stderr and result.HasField("stderr_digest") and not result.stderr_raw:
            digest = Digest.from_proto(result.stderr_digest, function)
            wanted.append((digest.size_bytes, digest, "stderr_raw"))
        if inline_output_files:
            paths = set(inline_output_files)
            for output in result.output_files:
                if output.path in paths and not output.contents:
                    digest = Digest.from_proto(output.digest, function)
                    wanted.append((digest.size_bytes, digest, output))
        budget = self.max_inline_bytes
        chosen = []
        for size, digest, target in sorted(wanted, key=lambda w: w[0]):
            if size > budget:
                break
            budget -= size
            chosen.append((digest, target))
        if not chosen:
            return
        contents = await self.cas.get_many({digest for digest, _ in chosen})
        for digest, target in chosen:
            data = contents.get(digest)
            if data is None:
                continue  # gone since the check: the client will fetch it by digest and see
            if isinstance(target, str):
                setattr(result, target, data)
            else:
                target.contents = data  # type: ignore[attr-defined]


def _take_inline_contents(result: re_pb2.ActionResult, function: int) -> dict[Digest, bytes]:
    """Strip inline contents from ``result``, setting digests; return the blobs to store."""
    blobs: dict[Digest, bytes] = {}

    def take(data: bytes, digest_field: re_pb2.Digest, what: str, has_digest: bool) -> None:
        digest = Digest.of(data, function)
        if has_digest and Digest.from_proto(digest_field, function) != digest:
            declared = f"{digest_field.hash}/{digest_field.size_bytes}"
            raise InvalidArgument(f"{what}: the inline content does not match its digest {declared} (content is {digest})")
        digest_field.CopyFrom(digest.to_proto())
        blobs[digest] = data

    if result.stdout_raw:
        take(result.stdout_raw, result.stdout_digest, "stdout_raw", result.HasField("stdout_digest"))
        result.ClearField("stdout_raw")
    if result.stderr_raw:
        take(result.stderr_raw, result.stderr_digest, "stderr_raw", result.HasField("stderr_digest"))
        result.ClearField("stderr_raw")
    for output in result.output_files:
        if output.contents:
            take(output.contents, output.digest, f"output file {output.path!r}", True)
            output.ClearField("contents")
    return blobs

