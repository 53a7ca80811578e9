"""Read a Directory tree back from a store into a flat {path: description} map."""

from __future__ import annotations

from cas.digest import Digest
from cas.store import BlobStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2


async def flatten(cas: BlobStore, root: Digest, prefix: str = "") -> dict[str, object]:
    """path -> bytes (file), ("x", bytes) (executable), ("->", target) (symlink), "dir"."""
    directory = re_pb2.Directory()
    directory.ParseFromString(await cas.get_bytes(root))
    out: dict[str, object] = {}
    for f in directory.files:
        data = await cas.get_bytes(Digest.from_proto(f.digest, root.function))
        out[prefix + f.name] = ("x", data) if f.is_executable else data
    for s in directory.symlinks:
        out[prefix + s.name] = ("->", s.target)
    for d in directory.directories:
        out[prefix + d.name] = "dir"
        out.update(await flatten(cas, Digest.from_proto(d.digest, root.function), prefix + d.name + "/"))
    return out
