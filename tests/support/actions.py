"""Build REv2 actions (Command, input tree, Action) into a real CAS store for tests.

Each builder call returns the action digest; ``leave_out`` skips uploading chosen
blobs so tests can check what Execute reports missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from google.protobuf import duration_pb2

from cas.digest import Digest
from cas.store import BlobStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2

SHA256 = re_pb2.DigestFunction.SHA256

Properties = Mapping[str, str] | Iterable[tuple[str, str]]


def platform_of(properties: Properties | None) -> re_pb2.Platform:
    items = list(properties.items()) if isinstance(properties, Mapping) else list(properties or ())
    return re_pb2.Platform(
        properties=[re_pb2.Platform.Property(name=k, value=v) for k, v in sorted(items)]
    )


@dataclass
class BuiltAction:
    digest: Digest
    action: re_pb2.Action
    command_digest: Digest
    input_root: Digest
    blobs: dict[str, Digest] = field(default_factory=dict)  # "command", "root", "dir:<path>", "file:<path>"


class ActionBuilder:
    def __init__(self, cas: BlobStore, function: int = SHA256) -> None:
        self.cas = cas
        self.function = function
        self._salt = 0

    def digest(self, data: bytes) -> Digest:
        return Digest.of(data, self.function)

    async def put(self, data: bytes) -> Digest:
        digest = self.digest(data)
        await self.cas.put_bytes(digest, data)
        return digest

    def _tree(self, files: Mapping[str, bytes], blobs: dict[str, tuple[Digest, bytes]], prefix: str = "") -> bytes:
        """Serialize the Directory for ``files`` (paths relative to it), children first."""
        here: dict[str, bytes] = {}
        below: dict[str, dict[str, bytes]] = {}
        for path, content in files.items():
            head, _, rest = path.partition("/")
            if rest:
                below.setdefault(head, {})[rest] = content
            else:
                here[head] = content
        directory = re_pb2.Directory()
        for name in sorted(here):
            digest = self.digest(here[name])
            blobs[f"file:{prefix}{name}"] = (digest, here[name])
            directory.files.add(name=name, digest=digest.to_proto())
        for name in sorted(below):
            data = self._tree(below[name], blobs, f"{prefix}{name}/")
            digest = self.digest(data)
            blobs[f"dir:{prefix}{name}"] = (digest, data)
            directory.directories.add(name=name, digest=digest.to_proto())
        return directory.SerializeToString()

    async def build(
        self,
        arguments: Iterable[str] = ("true",),
        *,
        inputs: Mapping[str, bytes] | None = None,
        platform: Properties | None = None,
        command_platform: Properties | None = None,
        timeout: float | None = None,
        do_not_cache: bool = False,
        unique: bool = True,
        leave_out: Iterable[str] = (),
    ) -> BuiltAction:
        """Upload an action and everything it needs, except the keys named in ``leave_out``
        ("action", "command", "root", "dir:<path>", "file:<path>")."""
        skip = set(leave_out)
        blobs: dict[str, tuple[Digest, bytes]] = {}
        root_data = self._tree(dict(inputs or {}), blobs)
        blobs["root"] = (self.digest(root_data), root_data)
        command = re_pb2.Command(arguments=list(arguments), platform=platform_of(command_platform))
        command_data = command.SerializeToString()
        blobs["command"] = (self.digest(command_data), command_data)
        action = re_pb2.Action(
            command_digest=blobs["command"][0].to_proto(),
            input_root_digest=blobs["root"][0].to_proto(),
            do_not_cache=do_not_cache,
        )
        if platform is not None:
            action.platform.CopyFrom(platform_of(platform))
        if timeout is not None:
            action.timeout.CopyFrom(duration_pb2.Duration(seconds=int(timeout)))
        if unique:
            self._salt += 1
            action.salt = f"test-{self._salt}".encode()
        action_data = action.SerializeToString()
        blobs["action"] = (self.digest(action_data), action_data)
        for key, (digest, data) in blobs.items():
            if key not in skip:
                await self.cas.put_bytes(digest, data)
        return BuiltAction(
            digest=blobs["action"][0], action=action, command_digest=blobs["command"][0],
            input_root=blobs["root"][0], blobs={k: d for k, (d, _) in blobs.items()},
        )
