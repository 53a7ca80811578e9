"""Build REv2 input trees for worker tests from nested dicts, into any BlobStore.

    root = await put_tree(store, {"src": {"a.c": b"int a;"}, "run.sh": Exe(b"#!/bin/sh"),
                                  "link": Link("src/a.c")})
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Union

from cas.digest import Digest
from cas.store import BlobStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2


@dataclass(frozen=True)
class Exe:
    data: bytes


@dataclass(frozen=True)
class Link:
    target: str


Node = Union[bytes, Exe, Link, "Mapping[str, Node]"]


def directory_blobs(tree: Mapping[str, Node], blobs: dict[Digest, bytes], function: int = re_pb2.DigestFunction.SHA256) -> Digest:
    """Add every blob of ``tree`` to ``blobs``; return the root Directory's digest."""
    directory = re_pb2.Directory()
    for name in sorted(tree):
        node = tree[name]
        if isinstance(node, Mapping):
            digest = directory_blobs(node, blobs, function)
            directory.directories.add(name=name, digest=digest.to_proto())
        elif isinstance(node, Link):
            directory.symlinks.add(name=name, target=node.target)
        else:
            data = node.data if isinstance(node, Exe) else node
            digest = Digest.of(data, function)
            blobs[digest] = data
            directory.files.add(name=name, digest=digest.to_proto(), is_executable=isinstance(node, Exe))
    data = directory.SerializeToString(deterministic=True)
    digest = Digest.of(data, function)
    blobs[digest] = data
    return digest


async def put_tree(store: BlobStore, tree: Mapping[str, Node], function: int = re_pb2.DigestFunction.SHA256) -> Digest:
    blobs: dict[Digest, bytes] = {}
    root = directory_blobs(tree, blobs, function)
    failures = await store.put_many(blobs)
    assert not failures, failures
    return root


async def put_message(store: BlobStore, message: object, function: int = re_pb2.DigestFunction.SHA256) -> Digest:
    data = message.SerializeToString(deterministic=True)  # type: ignore[attr-defined]
    digest = Digest.of(data, function)
    await store.put_bytes(digest, data)
    return digest
