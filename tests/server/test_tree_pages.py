"""server/tree_pages.py without gRPC: page cuts by count and by bytes, tokens, argument checks.

tests/server/test_get_tree.py drives the same pages through the real service.
"""

from __future__ import annotations

import pytest

from cas.digest import Digest
from cas.errors import InvalidArgument, NotFound
from cas.memory import MemoryStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.tree_pages import (
    DEFAULT_TREE_PAGE_SIZE,
    MAX_TREE_PAGE_SIZE,
    TreePage,
    decode_page_token,
    encode_page_token,
    tree_pages,
)

LIMIT = 4 << 20  # a batch limit that does not cut pages


async def store_tree(width: int, file_name_bytes: int = 1) -> tuple[MemoryStore, Digest]:
    """root -> ``width`` leaf directories, each with one file whose name is that long."""
    cas = MemoryStore(64 << 20)
    root = re_pb2.Directory()
    for i in range(width):
        leaf = re_pb2.Directory()
        leaf.files.add(name=f"{i:06}".ljust(file_name_bytes, "x"), digest=Digest.of(b"%d" % i).to_proto())
        root.directories.add(name=f"d{i:06}", digest=(await put(cas, leaf)).to_proto())
    return cas, await put(cas, root)


async def put(cas: MemoryStore, directory: re_pb2.Directory) -> Digest:
    data = directory.SerializeToString()
    digest = Digest.of(data)
    await cas.put_bytes(digest, data)
    return digest


async def pages_of(cas: MemoryStore, root: Digest, page_size: int = 0, token: str = "", limit: int = LIMIT) -> list[TreePage]:
    return [page async for page in tree_pages(cas, root, page_size, token, limit)]


async def test_pages_hold_page_size_directories_and_tokens_resume_the_walk() -> None:
    cas, root = await store_tree(24)  # 25 directories
    pages = await pages_of(cas, root, page_size=10)
    assert [len(p.directories) for p in pages] == [10, 10, 5]
    assert [p.next_page_token for p in pages] == [encode_page_token(root, 10), encode_page_token(root, 20), ""]
    whole = [d for p in await pages_of(cas, root) for d in p.directories]
    assert [d for p in pages for d in p.directories] == whole
    rest = await pages_of(cas, root, page_size=10, token=pages[1].next_page_token)
    assert [d for p in rest for d in p.directories] == whole[20:]


async def test_page_size_zero_is_the_default_and_large_ones_are_capped() -> None:
    cas, root = await store_tree(DEFAULT_TREE_PAGE_SIZE)  # one more directory than a default page
    assert [len(p.directories) for p in await pages_of(cas, root)] == [DEFAULT_TREE_PAGE_SIZE, 1]
    cas, root = await store_tree(MAX_TREE_PAGE_SIZE)
    pages = await pages_of(cas, root, page_size=MAX_TREE_PAGE_SIZE * 2)
    assert [len(p.directories) for p in pages] == [MAX_TREE_PAGE_SIZE, 1]


async def test_pages_are_cut_by_bytes_under_the_batch_limit() -> None:
    cas, root = await store_tree(9, file_name_bytes=1000)  # leaves of a little over 1 KB each
    limit = 3500
    pages = await pages_of(cas, root, page_size=100, limit=limit)
    assert len(pages) > 1
    for page in pages:
        sizes = [d.ByteSize() for d in page.directories]
        assert sum(sizes) <= limit or len(sizes) == 1  # a page always takes one, however big
    assert sum(len(p.directories) for p in pages) == 10


async def test_tokens_are_checked_against_their_root() -> None:
    root = Digest.of(b"root")
    assert decode_page_token(encode_page_token(root, 7), root) == 7
    with pytest.raises(InvalidArgument, match="another root"):
        decode_page_token(encode_page_token(Digest.of(b"other"), 7), root)
    for garbled in ["garbage!", "", encode_page_token(root, -1), "dDI6YWJjOjE="]:  # the last: version t2
        with pytest.raises(InvalidArgument, match="not one this server issued"):
            decode_page_token(garbled, root)


async def test_bad_arguments_and_a_missing_root_fail_before_any_page() -> None:
    cas, root = await store_tree(2)
    with pytest.raises(InvalidArgument, match="page_size -1 is negative"):
        await pages_of(cas, root, page_size=-1)
    with pytest.raises(InvalidArgument, match="not one this server issued"):
        await pages_of(cas, root, token="garbage!")
    absent = Digest.of(b"no such directory")
    with pytest.raises(NotFound, match=f"root directory {absent} is not in the CAS"):
        await pages_of(cas, absent)
