"""Checks an action before it is queued, so workers only get actions they can run.

- the Action, its Command and every input Directory and file must be in the CAS,
  else FAILED_PRECONDITION with one MISSING violation per missing blob (Bazel
  re-uploads and retries on exactly this);
- every Directory must be well formed (names sorted and unique, single path
  components, valid digests), else INVALID_ARGUMENT naming the entry;
- the timeout must not exceed the configured maximum.

The walk is breadth-first with one ``get_many`` per level, and the file check is
one ``find_missing`` for the whole tree.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError, Message

from cas.digest import Digest, digests_from_protos
from cas.errors import InvalidArgument, MissingBlobs, ReapiError
from cas.store import BlobStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
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

    def __init__(self, matcher: PlatformMatcher, max_timeout: float) -> None:
        self.matcher = matcher
        self.max_timeout = max_timeout

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

        command_bytes = await cas.get_or_none(command_digest)
        missing, files = await self._walk(cas, root_digest)
        if command_bytes is None:
            missing.add(command_digest)
        if files:
            missing |= await cas.find_missing(files)
        if missing:
            raise MissingBlobs(missing, "inputs")
        command = re_pb2.Command()
        _parse(command, command_bytes or b"", f"the Command blob {command_digest}")
        # Buck2 fills only Command.platform; REv2 2.2+ clients fill Action.platform.
        platform = action.platform if action.platform.properties else command.platform
        requirements = self.matcher.requirements((p.name, p.value) for p in platform.properties)
        return PreparedAction(instance_name, action_digest, action_bytes, requirements, action.do_not_cache)

    def _check_timeout(self, action: re_pb2.Action) -> None:
        if not action.HasField("timeout"):
            return
        seconds = action.timeout.seconds + action.timeout.nanos / 1e9
        if seconds < 0:
            raise InvalidArgument(f"Action.timeout is negative ({seconds:g}s)")
        if seconds > self.max_timeout:
            raise InvalidArgument(
                f"Action.timeout of {seconds:g}s is above this server's maximum of {self.max_timeout:g}s"
            )

    async def _walk(self, cas: BlobStore, root: Digest) -> tuple[set[Digest], set[Digest]]:
        """Check every Directory under ``root``; return (missing directories, file digests)."""
        function = root.function
        missing: set[Digest] = set()
        files: set[Digest] = set()
        paths = {root: ""}
        level = [root]
        while level:
            next_level: list[Digest] = []
            for start in range(0, len(level), BATCH):
                batch = level[start : start + BATCH]
                found = await cas.get_many([d for d in batch if not d.is_empty])
                for digest in batch:
                    data = b"" if digest.is_empty else found.get(digest)
                    if data is None:
                        missing.add(digest)
                        continue
                    path = paths[digest]
                    where = f"directory {path!r} ({digest})" if path else f"the input root ({digest})"
                    directory = re_pb2.Directory()
                    _parse(directory, data, f"input tree: {where}")
                    check_directory(directory, where)
                    files.update(_node_digests(directory.files, function, where, "file"))
                    children = _node_digests(directory.directories, function, where, "directory")
                    for node, child in zip(directory.directories, children):
                        if child not in paths:
                            paths[child] = f"{path}/{node.name}" if path else node.name
                            next_level.append(child)
            level = next_level
        files.discard(Digest.empty(function))
        return missing, files
