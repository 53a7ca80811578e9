"""Checks an action before it is queued, so workers only get actions they can run.

- the Action, its Command and every input Directory and file must be in the CAS,
  else FAILED_PRECONDITION with one MISSING violation per missing blob (Bazel
  re-uploads and retries on exactly this);
- every Directory must be well formed (names sorted and unique, single path
  components, valid digests), else INVALID_ARGUMENT naming the entry;
- the timeout must not exceed the configured maximum.

The walk is breadth-first with one ``get_many`` per level, and the file check is
one ``find_missing`` for the whole tree. Directories and Commands checked before
come from the InputCache (input_cache.py) instead of the CAS: for them only their
existence is checked, in that same ``find_missing``, so an action whose tree has
been seen costs one read (the Action) and one existence check.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError, Message

from cas.digest import Digest, digests_from_protos
from cas.errors import InvalidArgument, MissingBlobs, ReapiError
from cas.store import BlobStore
from cas.timestamps import seconds_of
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.scheduler.input_cache import CheckedCommand, CheckedDirectory, InputCache
from server.scheduler.locality import largest_files, sketch_of
from server.scheduler.operation import PreparedAction
from server.scheduler.platform import PlatformMatcher

# Directories fetched per get_many: bounds the memory one step of the walk holds.
BATCH = 1000


def _parse(message: Message, data: bytes, what: str) -> None:
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise InvalidArgument(f"{what} is not a valid {type(message).__name__} message: {exc}") from None


def _digest(proto: re_pb2.Digest, function: int, field: str) -> Digest:
    try:
        return Digest.from_proto(proto, function)
    except ReapiError as err:
        raise err.with_context(field) from None


def check_directory(directory: re_pb2.Directory, where: str) -> None:
    """INVALID_ARGUMENT naming the entry unless names are sorted, unique, single components."""
    seen: dict[str, str] = {}
    for kind, nodes in (("file", directory.files), ("directory", directory.directories),
                        ("symlink", directory.symlinks)):
        previous = None
        for node in nodes:
            name = node.name
            if not name or name in (".", "..") or "/" in name or "\0" in name:
                raise InvalidArgument(
                    f"input tree: {where} has a {kind} named {name!r}; names must be single path "
                    "components (not empty, '.' or '..', and without '/')"
                )
            if previous is not None and name <= previous:
                problem = "is listed twice" if name == previous else f"comes after {previous!r}"
                raise InvalidArgument(
                    f"input tree: {where}: {kind} {name!r} {problem}; entries must be sorted by name and unique"
                )
            if name in seen:
                raise InvalidArgument(f"input tree: {where} has both a {seen[name]} and a {kind} named {name!r}")
            seen[name] = kind
            previous = name


def _node_digests(nodes, function: int, where: str, kind: str) -> list[Digest]:  # type: ignore[no-untyped-def]
    try:
        return digests_from_protos((node.digest for node in nodes), function)
    except ReapiError:
        for node in nodes:  # find the culprit for the message
            _digest(node.digest, function, f"input tree: {where}: {kind} {node.name!r}")
        raise


class ActionPreparer:
    """Turns an action digest into a PreparedAction, or raises the precise error."""

    def __init__(self, matcher: PlatformMatcher, max_timeout: float, cache: InputCache | None = None,
                 sketches: bool = False) -> None:
        """``sketches``: give each PreparedAction its input sketch (locality dispatch)."""
        self.matcher = matcher
        self.max_timeout = max_timeout
        self.cache = cache if cache is not None else InputCache(0)
        self.sketches = sketches

    async def prepare(self, cas: BlobStore, instance_name: str, action_digest: Digest) -> PreparedAction:
        function = action_digest.function
        action_bytes = await cas.get_or_none(action_digest)
        if action_bytes is None:
            raise MissingBlobs([action_digest], "inputs")
        action = re_pb2.Action()
        _parse(action, action_bytes, f"the Action blob {action_digest}")
        self._check_timeout(action)
        if not action.HasField("command_digest"):
            raise InvalidArgument("Action.command_digest is not set")
        if not action.HasField("input_root_digest"):
            raise InvalidArgument("Action.input_root_digest is not set (use the digest of an empty Directory)")
        command_digest = _digest(action.command_digest, function, "Action.command_digest")
        root_digest = _digest(action.input_root_digest, function, "Action.input_root_digest")

        command = self.cache.command(command_digest)
        prefetched: dict[Digest, bytes] = {}
        if command is None:
            # Read together with the input root, when that is not cached either: one store call.
            wanted = [command_digest]
            if not root_digest.is_empty and self.cache.directory(root_digest) is None:
                wanted.append(root_digest)
            prefetched = await cas.get_many(wanted)
        visited: list[CheckedDirectory] = []
        missing, to_check = await self._walk(cas, root_digest, prefetched, visited)
        if command is None and command_digest not in prefetched:
            missing.add(command_digest)
        if command is not None:
            to_check.add(command_digest)  # cached: only its existence is checked
        if to_check:
            missing |= await cas.find_missing(to_check)
        if missing:
            raise MissingBlobs(missing, "inputs")
        if command is None:
            command = self._check_command(command_digest, prefetched[command_digest])
        # Buck2 fills only Command.platform; REv2 2.2+ clients fill Action.platform.
        if action.platform.properties:
            properties = [(p.name, p.value) for p in action.platform.properties]
        else:
            properties = list(command.platform)
        requirements = self.matcher.requirements(properties)
        timeout = seconds_of(action.timeout) if action.HasField("timeout") else 0.0
        sketch = b""
        if self.sketches:
            sketch = sketch_of((d for checked in visited for d in checked.largest),
                               sum(checked.file_bytes for checked in visited))
        return PreparedAction(instance_name, action_digest, action_bytes, requirements, action.do_not_cache,
                              timeout or None, sketch)

    def _check_command(self, digest: Digest, data: bytes) -> CheckedCommand:
        parsed = re_pb2.Command()
        _parse(parsed, data, f"the Command blob {digest}")
        command = CheckedCommand(data, tuple((p.name, p.value) for p in parsed.platform.properties))
        self.cache.add(digest, command)
        return command

    def _check_timeout(self, action: re_pb2.Action) -> None:
        if not action.HasField("timeout"):
            return
        seconds = seconds_of(action.timeout)
        if seconds < 0:
            raise InvalidArgument(f"Action.timeout is negative ({seconds:g}s)")
        if seconds > self.max_timeout:
            raise InvalidArgument(
                f"Action.timeout of {seconds:g}s is above this server's maximum of {self.max_timeout:g}s"
            )

    async def _walk(
        self, cas: BlobStore, root: Digest, prefetched: dict[Digest, bytes], visited: list[CheckedDirectory]
    ) -> tuple[set[Digest], set[Digest]]:
        """Check every Directory under ``root`` (each distinct one is added to ``visited``);
        return (missing directories, digests whose existence is still to be checked: the
        files, and the cached directories)."""
        function = root.function
        missing: set[Digest] = set()
        to_check: set[Digest] = set()
        paths = {root: ""}
        level = [root]
        while level:
            next_level: list[Digest] = []
            to_read: list[Digest] = []
            for digest in level:
                checked = None if digest.is_empty else self.cache.directory(digest)
                if checked is None:
                    to_read.append(digest)
                    continue
                to_check.add(digest)
                to_check.update(checked.files)
                visited.append(checked)
                self._visit(checked, paths[digest], paths, next_level)
            for start in range(0, len(to_read), BATCH):
                batch = to_read[start : start + BATCH]
                wanted = [d for d in batch if not d.is_empty and d not in prefetched]
                found = await cas.get_many(wanted) if wanted else {}
                for digest in batch:
                    data = b"" if digest.is_empty else found.get(digest, prefetched.get(digest))
                    if data is None:
                        missing.add(digest)
                        continue
                    checked = self._check_directory(digest, data, paths[digest], function)
                    to_check.update(checked.files)
                    visited.append(checked)
                    self._visit(checked, paths[digest], paths, next_level)
            level = next_level
        to_check.discard(Digest.empty(function))
        return missing, to_check

    @staticmethod
    def _visit(checked: CheckedDirectory, path: str, paths: dict[Digest, str], next_level: list[Digest]) -> None:
        """Queue the children not seen yet in this walk, remembering a path of each for messages."""
        for name, child in checked.children:
            if child not in paths:
                paths[child] = f"{path}/{name}" if path else name
                next_level.append(child)

    def _check_directory(self, digest: Digest, data: bytes, path: str, function: int) -> CheckedDirectory:
        where = f"directory {path!r} ({digest})" if path else f"the input root ({digest})"
        directory = re_pb2.Directory()
        _parse(directory, data, f"input tree: {where}")
        check_directory(directory, where)
        files = tuple(_node_digests(directory.files, function, where, "file"))
        children = _node_digests(directory.directories, function, where, "directory")
        checked = CheckedDirectory(data, files, tuple(zip((n.name for n in directory.directories), children)),
                                   largest_files(files), sum(d.size_bytes for d in files))
        if not digest.is_empty:
            self.cache.add(digest, checked)
        return checked
