"""GetTree over real gRPC: whole trees, pages, partial trees, bad tokens."""

from __future__ import annotations

import grpc

from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from tests.server.client import StorageClient, expect_error


def directory(files: dict[str, bytes] | None = None, dirs: dict[str, Digest] | None = None) -> re_pb2.Directory:
    d = re_pb2.Directory()
    for name, data in sorted((files or {}).items()):
        d.files.add(name=name, digest=Digest.of(data).to_proto())
    for name, digest in sorted((dirs or {}).items()):
        d.directories.add(name=name, digest=digest.to_proto())
    return d


async def put_directory(client: StorageClient, d: re_pb2.Directory, upload: bool = True) -> Digest:
    data = d.SerializeToString()
    return await client.upload(data) if upload else Digest.of(data)


async def wide_tree(client: StorageClient, width: int) -> tuple[Digest, set[bytes]]:
    """root -> width subdirectories -> one leaf each; returns the root and all Directory blobs."""
    blobs = set()
    children = {}
    for i in range(width):
        leaf = directory(files={f"f{i}": f"content {i}".encode()})
        mid = directory(dirs={"leaf": await put_directory(client, leaf)})
        children[f"d{i:04}"] = await put_directory(client, mid)
        blobs |= {leaf.SerializeToString(), mid.SerializeToString()}
    root = directory(files={"top": b"top"}, dirs=children)
    blobs.add(root.SerializeToString())
    return await put_directory(client, root), blobs


async def get_tree(client: StorageClient, root: Digest, page_size: int = 0, token: str = "") -> list[re_pb2.GetTreeResponse]:
    request = re_pb2.GetTreeRequest(root_digest=root.to_proto(), page_size=page_size, page_token=token)
    return [response async for response in client.cas.GetTree(request)]


async def test_get_tree_returns_every_directory_once(client: StorageClient) -> None:
    shared = await put_directory(client, directory(files={"x": b"x"}))
    root_dir = directory(dirs={"a": shared, "b": shared})  # the same subtree twice
    root = await put_directory(client, root_dir)
    pages = await get_tree(client, root)
    assert len(pages) == 1 and pages[0].next_page_token == ""
    assert [d.SerializeToString() for d in pages[0].directories] == [root_dir.SerializeToString(), directory(files={"x": b"x"}).SerializeToString()]


async def test_pages_follow_page_size_and_tokens_resume(client: StorageClient) -> None:
    root, blobs = await wide_tree(client, 12)  # 25 directories
    pages = await get_tree(client, root, page_size=10)
    assert [len(p.directories) for p in pages] == [10, 10, 5]
    assert all(p.next_page_token for p in pages[:-1]) and pages[-1].next_page_token == ""
    streamed = [d.SerializeToString() for p in pages for d in p.directories]
    assert sorted(streamed) == sorted(blobs)
    # A client may come back later with a token and get the rest.
    resumed = await get_tree(client, root, page_size=10, token=pages[1].next_page_token)
    assert [d.SerializeToString() for p in resumed for d in p.directories] == streamed[20:]


async def test_missing_subtrees_are_left_out(client: StorageClient) -> None:
    present = await put_directory(client, directory(files={"p": b"p"}))
    gone_leaf = directory(files={"g": b"g"})
    gone = await put_directory(client, directory(dirs={"leaf": await put_directory(client, gone_leaf)}), upload=False)
    root = await put_directory(client, directory(dirs={"present": present, "gone": gone}))
    pages = await get_tree(client, root)
    names = [[f.name for f in d.files] for p in pages for d in p.directories]
    assert names == [[], ["p"]]  # root and the present subtree; nothing below the missing one


async def test_a_missing_root_is_not_found(client: StorageClient) -> None:
    root = Digest.of(directory(files={"a": b"a"}).SerializeToString())
    request = re_pb2.GetTreeRequest(root_digest=root.to_proto())
    message = await expect_error(_drain(client.cas.GetTree(request)), grpc.StatusCode.NOT_FOUND)
    assert str(root) in message


async def test_a_blob_that_is_not_a_directory_is_invalid(client: StorageClient) -> None:
    junk = await client.upload(b"\xff\xff\xff not a proto")
    request = re_pb2.GetTreeRequest(root_digest=junk.to_proto())
    message = await expect_error(_drain(client.cas.GetTree(request)), grpc.StatusCode.INVALID_ARGUMENT)
    assert "not a Directory" in message


async def test_bad_page_tokens_are_refused(client: StorageClient) -> None:
    root, _ = await wide_tree(client, 2)
    other = await put_directory(client, directory(files={"o": b"o"}))
    token = (await get_tree(client, root, page_size=1))[0].next_page_token
    for bad_root, bad_token, text in [(root, "garbage!", "not one this server issued"), (other, token, "another root")]:
        request = re_pb2.GetTreeRequest(root_digest=bad_root.to_proto(), page_token=bad_token)
        assert text in await expect_error(_drain(client.cas.GetTree(request)), grpc.StatusCode.INVALID_ARGUMENT)


async def _drain(call) -> list:  # type: ignore[no-untyped-def]
    return [response async for response in call]
