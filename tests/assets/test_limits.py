"""Issue 9: how much one archive may unpack, by default in proportion to the CAS.

The issue's case was a 4 MB tar.gz that unpacked 4 GiB into a 16 GiB cache. Here the
same happens in miniature: small archives that would unpack past 1/8 of the CAS,
past 100x their own size, or past the entry limit are refused with
RESOURCE_EXHAUSTED naming the limit, and nothing refers to what was stored before
the refusal (no index entry, no Directory).
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from google.rpc import code_pb2

from cas.config import build_stores, close_stores
from cas.decorators.read_cache import ReadCachingStore
from cas.decorators.verify import VerifyingStore
from cas.digest import Digest
from cas.errors import ResourceExhausted
from cas.memory import MemoryStore
from cas.remote.store import RemoteStore
from server.assets.archive import ArchiveUnpacker
from server.assets.config import AssetsConfig
from server.assets.limits import UnpackLimits, store_capacity
from server.assets.spool import Spool
from server.config import default_stores
from tests.assets.archives import Entry, archive_bytes
from tests.assets.conftest import LOCAL_ORIGINS, asset_services
from tests.assets.helpers import directory_request
from tests.support.http_origin import HttpOrigin

MIB = 1 << 20
GIB = 1 << 30


async def test_the_zero_config_cas_allows_an_eighth_of_its_size(tmp_path: Path) -> None:
    stores = await build_stores(default_stores(tmp_path))
    try:
        assert store_capacity(stores["cas"]) == 20 * GIB  # 4 GiB packed + 16 GiB disk
        budget = UnpackLimits().budget(stores["cas"])
        assert budget.max_bytes == int(2.5 * GIB)
        assert budget.bytes_message() == (
            "unpacked content passed the 2.5 GiB limit (1/8 of the CAS's 20 GiB; [assets] max_unpacked_size sets another)"
        )
    finally:
        await close_stores(stores)


async def test_default_limits_for_other_stores() -> None:
    remote = RemoteStore.connect("127.0.0.1:1")  # no I/O until used
    try:
        assert store_capacity(remote) is None
        assert UnpackLimits().budget(remote).max_bytes == 4 * GIB  # no known size: a fixed limit
        assert store_capacity(ReadCachingStore(MemoryStore(MIB), remote)) is None  # the slow store decides
    finally:
        await remote.aclose()
    assert UnpackLimits().budget(VerifyingStore(MemoryStore(64 * MIB))).max_bytes == 8 * MIB
    assert UnpackLimits().budget(MemoryStore(1 << 40)).max_bytes == 64 * GIB  # capped, however large the CAS
    explicit = UnpackLimits(max_unpacked_size=3 * MIB).budget(MemoryStore(1 << 40))
    assert explicit.max_bytes == 3 * MIB and explicit.bytes_rule == "[assets] max_unpacked_size"
    # The ratio limit applies past the ratio-free size only, and only to archives.
    assert UnpackLimits().budget(MemoryStore(1 << 40), packed_size=MIB).max_bytes == 100 * MIB
    assert UnpackLimits().budget(MemoryStore(1 << 40), packed_size=1000).max_bytes == 64 * MIB
    assert UnpackLimits(max_compression_ratio=0).budget(MemoryStore(1 << 40), packed_size=1000).max_bytes == 64 * GIB


def declared_bomb(size: int) -> bytes:
    """A tar.gz of a few hundred bytes whose one member says it holds ``size`` bytes."""
    info = tarfile.TarInfo("bomb/zeros")
    info.size = size
    return gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT) + bytes(4096))


def part(i: int, size: int) -> bytes:
    return bytes([i]) * size


def filled(fmt: str, files: int, each: int) -> bytes:
    """``files`` members of ``each`` equal bytes (each member different), compressed."""
    if fmt == "zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for i in range(files):
                archive.writestr(f"bomb/part{i}", part(i, each))
        return buffer.getvalue()
    return archive_bytes(fmt, [Entry(f"bomb/part{i}", part(i, each)) for i in range(files)])


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
async def test_a_small_archive_past_an_eighth_of_the_cas_is_refused_and_left_unreferenced(origin: HttpOrigin, fmt: str) -> None:
    data = filled(fmt, files=4, each=3 * MIB)  # 12 MiB in ~12-40 KiB
    assert len(data) < 64 << 10
    url = origin.serve(f"/bomb.{fmt}", data)
    cas = VerifyingStore(MemoryStore(64 * MIB))  # 1/8: 8 MiB
    async with asset_services(cas=cas) as assets:
        response = await assets.fetch.FetchDirectory(directory_request(url))
        assert response.status.code == code_pb2.RESOURCE_EXHAUSTED, response.status.message
        assert response.status.message == (
            f"{url}: unpacked content passed the 8 MiB limit (1/8 of the CAS's 64 MiB; [assets] max_unpacked_size sets another)"
        )
        assert not response.HasField("root_directory_digest")
        # The third member would pass the limit: refused by its declared size, before it is read;
        # the two before it stay in the CAS, referenced by nothing, until evicted.
        assert [await cas.has(Digest.of(part(i, 3 * MIB))) for i in range(4)] == [True, True, False, False]
        # Nothing was recorded for the tree: asked again, it is unpacked (and refused) again.
        origin.stop()
        again = await assets.fetch.FetchDirectory(directory_request(url))
        assert again.status.code == code_pb2.RESOURCE_EXHAUSTED


async def test_a_declared_size_past_the_limit_is_refused_before_reading(origin: HttpOrigin) -> None:
    """The issue's 4 MB tar.gz that unpacked 4 GiB, in a few hundred bytes that claim it."""
    data = declared_bomb(4 * GIB)
    url = origin.serve("/claims-4GiB.tar.gz", data)
    async with asset_services() as assets:  # the harness's CAS holds 1 GiB: 128 MiB may be unpacked
        response = await assets.fetch.FetchDirectory(directory_request(url))
        no_ratio = AssetsConfig(policy=LOCAL_ORIGINS, limits=UnpackLimits(max_compression_ratio=0))
        async with asset_services(no_ratio) as without_ratio:
            by_size = await without_ratio.fetch.FetchDirectory(directory_request(url))
    assert response.status.code == code_pb2.RESOURCE_EXHAUSTED, response.status.message
    assert f"unpacked content passed the 64 MiB limit (100 times the archive's {len(data)} bytes" in response.status.message
    assert by_size.status.code == code_pb2.RESOURCE_EXHAUSTED, by_size.status.message
    assert "unpacked content passed the 128 MiB limit (1/8 of the CAS's 1 GiB" in by_size.status.message


async def test_an_archive_that_expands_a_hundredfold_is_refused(origin: HttpOrigin) -> None:
    data = filled("tar.gz", files=20, each=5 * MIB)  # 100 MiB in ~100 KiB: a compression bomb
    url = origin.serve("/bomb.tar.gz", data)
    config = AssetsConfig(policy=LOCAL_ORIGINS, limits=UnpackLimits(max_unpacked_size=GIB))
    async with asset_services(config) as assets:
        response = await assets.fetch.FetchDirectory(directory_request(url))
    assert response.status.code == code_pb2.RESOURCE_EXHAUSTED, response.status.message
    assert "unpacked content passed the 64 MiB limit (100 times the archive's" in response.status.message
    assert ": an archive bomb? [assets] max_compression_ratio sets another)" in response.status.message


async def test_ratio_and_hard_links_in_the_unpacker() -> None:
    cas = VerifyingStore(MemoryStore(GIB))
    spool = Spool(memory_limit=1 << 16)

    async def unpack(data: bytes, limits: UnpackLimits) -> None:
        archive = Digest.of(data)
        await cas.put_bytes(archive, data)
        await ArchiveUnpacker(spool, limits).unpack(cas, archive, archive.function, "test archive")

    with pytest.raises(ResourceExhausted, match=r"passed the 1 MiB limit \(2 times the archive's"):
        await unpack(filled("tar.gz", files=3, each=MIB // 2), UnpackLimits(max_compression_ratio=2, ratio_free_bytes=MIB))
    # Three names for one 400 KiB file: stored once, but a client writes all three.
    links = [Entry("a", bytes(400 << 10)), Entry("b", kind="hardlink", target="a"), Entry("c", kind="hardlink", target="a")]
    with pytest.raises(ResourceExhausted, match=r"passed the 1 MiB limit \(\[assets\] max_unpacked_size\)"):
        await unpack(archive_bytes("tar", links), UnpackLimits(max_unpacked_size=MIB))
    await unpack(archive_bytes("tar", links[:2]), UnpackLimits(max_unpacked_size=MIB))


def test_declared_bomb_is_small() -> None:
    assert len(declared_bomb(4 * GIB)) < 1024
    with tarfile.open(fileobj=io.BytesIO(declared_bomb(4 * GIB)), mode="r:gz") as archive:
        assert archive.next().size == 4 * GIB  # type: ignore[union-attr]
