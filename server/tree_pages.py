"""GetTree's pages: a walk of a directory tree cut into pages that resume by token.

A page holds at most ``page_size`` Directory messages and, so that a page of big
Directories stays well under the 4 MiB message limit clients keep, at most
``PAGE_BYTES_CAP`` bytes of them (or the batch limit, if lower). The token that
leads to the next page names the root and the walk position; it is opaque to
clients and refused for any other root.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import NamedTuple

from cas.digest import Digest
from cas.errors import InvalidArgument, NotFound
from cas.store import BlobStore
from cas.tree import TreeWalk
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2

# Page size when the client sets none, and the most we put in one page.
DEFAULT_TREE_PAGE_SIZE = 1000
MAX_TREE_PAGE_SIZE = 10_000
PAGE_BYTES_CAP = 2 << 20
_TOKEN_VERSION = "t1"


class TreePage(NamedTuple):
    directories: list[re_pb2.Directory]
    next_page_token: str  # empty on the last page


def encode_page_token(root: Digest, offset: int) -> str:
    """Opaque to clients: where the next page starts in the walk of ``root``."""
    return base64.urlsafe_b64encode(f"{_TOKEN_VERSION}:{root.hash}:{offset}".encode()).decode()


def decode_page_token(token: str, root: Digest) -> int:
    """The offset a token names; INVALID_ARGUMENT if it is garbled or for another root."""
    try:
        version, root_hash, offset_text = base64.urlsafe_b64decode(token.encode()).decode().split(":")
        offset = int(offset_text)
    except (ValueError, UnicodeError):
        raise InvalidArgument(f"page_token {token!r} is not one this server issued") from None
    if version != _TOKEN_VERSION or offset < 0:
        raise InvalidArgument(f"page_token {token!r} is not one this server issued")
    if root_hash != root.hash:
        raise InvalidArgument(f"page_token {token!r} belongs to the tree of another root, not {root}")
    return offset


async def tree_pages(
    cas: BlobStore, root: Digest, page_size: int, page_token: str, max_batch_bytes: int
) -> AsyncIterator[TreePage]:
    """The pages of the tree under ``root`` from where ``page_token`` points (the start
    when empty); ``page_size`` 0 means the default. Arguments are checked before the walk."""
    if page_size < 0:
        raise InvalidArgument(f"page_size {page_size} is negative")
    page_size = min(page_size or DEFAULT_TREE_PAGE_SIZE, MAX_TREE_PAGE_SIZE)
    start = decode_page_token(page_token, root) if page_token else 0
    if not await cas.has(root):
        raise NotFound(f"root directory {root} is not in the CAS")
    byte_budget = min(max_batch_bytes, PAGE_BYTES_CAP)
    page: list[re_pb2.Directory] = []
    page_bytes = 0
    position = start
    async for _, directory in TreeWalk(cas, root).directories(skip=start):
        size = directory.ByteSize()
        if page and (len(page) >= page_size or page_bytes + size > byte_budget):
            yield TreePage(page, encode_page_token(root, position))
            page, page_bytes = [], 0
        page.append(directory)
        page_bytes += size
        position += 1
    yield TreePage(page, "")
