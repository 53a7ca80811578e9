"""server/uploads.py without gRPC: the pipe into a store write, takeover, expiry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from cas.digest import Digest
from cas.errors import Aborted, DeadlineExceeded, InvalidArgument
from cas.memory import MemoryStore
from cas.decorators.verify import VerifyingStore
from server.uploads import UploadKey, UploadRegistry

DATA = bytes(range(256)) * 400
DIGEST = Digest.of(DATA)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


_OPEN: list[UploadRegistry] = []


def setup(**kwargs: object) -> tuple[UploadRegistry, MemoryStore, VerifyingStore, FakeClock]:
    clock = FakeClock()
    inner = MemoryStore(1 << 20)
    registry = UploadRegistry(clock=clock, **kwargs)  # type: ignore[arg-type]
    _OPEN.append(registry)
    return registry, inner, VerifyingStore(inner), clock


@pytest.fixture(autouse=True)
async def close_registries() -> AsyncIterator[None]:
    """Each registry's background sweep stops with the test."""
    yield
    while _OPEN:
        await _OPEN.pop().aclose()


async def test_chunks_fed_by_two_owners_in_turn_commit_once() -> None:
    registry, inner, cas, clock = setup(max_buffered=2)
    key = UploadKey("", "u", DIGEST)
    upload = registry.start(key, cas)
    first, second = object(), object()
    upload.attach(first, clock())
    for start in range(0, 40_000, 10_000):
        await upload.feed(first, DATA[start : start + 10_000])
    upload.detach(first, clock())
    assert registry.get(key) is upload and upload.received == 40_000
    upload.attach(second, clock())
    await upload.feed(second, DATA[40_000:])
    await upload.finish(second)
    assert await inner.get_bytes(DIGEST) == DATA
    assert not upload.alive


async def test_an_earlier_owner_loses_its_turn() -> None:
    registry, _, cas, clock = setup()
    upload = registry.start(UploadKey("", "u", DIGEST), cas)
    old, new = object(), object()
    upload.attach(old, clock())
    await upload.feed(old, DATA[:100])
    upload.attach(new, clock())
    with pytest.raises(Aborted, match="taken over"):
        await upload.feed(old, DATA[100:200])
    await upload.feed(new, DATA[100:])
    await upload.finish(new)


async def test_a_hash_mismatch_fails_finish_and_stores_nothing() -> None:
    registry, inner, cas, clock = setup()
    wrong = Digest(Digest.of(b"x").hash, len(DATA))
    upload = registry.start(UploadKey("", "u", wrong), cas)
    owner = object()
    upload.attach(owner, clock())
    await upload.feed(owner, DATA)
    with pytest.raises(InvalidArgument, match="does not match"):
        await upload.finish(owner)
    assert len(inner) == 0


async def test_idle_uploads_expire_and_leave_no_trace() -> None:
    registry, inner, cas, clock = setup(idle_timeout=60.0)
    key = UploadKey("", "u", DIGEST)
    upload = registry.start(key, cas)
    owner = object()
    upload.attach(owner, clock())
    await upload.feed(owner, DATA[:1000])
    upload.detach(owner, clock())
    clock.now += 59
    assert registry.expire_idle(force=True) == 0 and registry.get(key) is upload
    clock.now += 2
    assert registry.expire_idle(force=True) == 1
    await upload.wait_closed()
    assert registry.get(key) is None and len(inner) == 0
    with pytest.raises(DeadlineExceeded, match="expired"):
        upload.attach(owner, clock())
        await upload.feed(owner, DATA[1000:2000])


async def test_attached_uploads_never_expire() -> None:
    registry, _, cas, clock = setup(idle_timeout=1.0)
    key = UploadKey("", "u", DIGEST)
    upload = registry.start(key, cas)
    upload.attach(object(), clock())
    clock.now += 1000
    assert registry.expire_idle(force=True) == 0 and upload.alive
    await registry.aclose()


async def test_idle_uploads_beyond_the_cap_are_dropped_oldest_first() -> None:
    registry, _, cas, clock = setup(max_idle=2)
    uploads = []
    for i in range(4):
        clock.now += 1
        uploads.append(registry.start(UploadKey("", f"u{i}", DIGEST), cas))
    registry.expire_idle(force=True)  # start() sweeps too, so some went already
    await asyncio.gather(uploads[0].wait_closed(), uploads[1].wait_closed())
    assert [u.alive for u in uploads] == [False, False, True, True]
    await registry.aclose()
    assert not any(u.alive for u in uploads)


async def test_restarting_a_key_aborts_the_earlier_upload() -> None:
    registry, inner, cas, clock = setup()
    key = UploadKey("", "u", DIGEST)
    first = registry.start(key, cas)
    second = registry.start(key, cas)
    await first.wait_closed()
    assert not first.alive and second.alive and registry.get(key) is second
    owner = object()
    second.attach(owner, clock())
    await second.feed(owner, DATA)
    await second.finish(owner)
    assert await inner.get_bytes(DIGEST) == DATA


async def test_the_background_sweep_expires_uploads_without_new_ones() -> None:
    """No further upload starts, yet the idle one goes (real time, a 0.2 s timeout)."""
    inner = MemoryStore(1 << 20)
    registry = UploadRegistry(idle_timeout=0.2)
    key = UploadKey("", "u", DIGEST)
    upload = registry.start(key, VerifyingStore(inner))
    owner = object()
    upload.attach(owner, registry.clock())
    await upload.feed(owner, DATA[:1000])
    upload.detach(owner, registry.clock())
    await asyncio.wait_for(upload.wait_closed(), timeout=30)
    assert registry.get(key) is None and len(inner) == 0
    await registry.aclose()
