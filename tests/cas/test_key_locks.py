"""KeyLocks: one holder per key; waiters in turn; cancellation leaves nothing held."""

from __future__ import annotations

import asyncio

import pytest

from cas.disk.key_locks import KeyLocks


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_try_acquire_never_waits() -> None:
    locks = KeyLocks()
    assert locks.try_acquire("a")
    assert not locks.try_acquire("a")
    assert locks.held("a") and len(locks) == 1
    locks.release("a")
    assert not locks.held("a") and len(locks) == 0
    assert locks.try_acquire("a")


async def test_acquire_waits_for_the_holder_and_waiters_take_turns() -> None:
    locks = KeyLocks()
    await locks.acquire("k")
    order: list[str] = []

    async def waiter(name: str) -> None:
        await locks.acquire("k")
        order.append(name)
        await settle()
        locks.release("k")

    tasks = [asyncio.create_task(waiter(name)) for name in ("first", "second")]
    await settle()
    assert order == []  # both wait while the key is held
    locks.release("k")
    await asyncio.gather(*tasks)
    assert sorted(order) == ["first", "second"]
    assert len(locks) == 0


async def test_a_cancelled_waiter_does_not_disturb_the_others() -> None:
    locks = KeyLocks()
    await locks.acquire("k")
    cancelled = asyncio.create_task(locks.acquire("k"))
    patient = asyncio.create_task(locks.acquire("k"))
    await settle()
    cancelled.cancel()
    await settle()
    assert cancelled.cancelled()
    locks.release("k")
    await asyncio.wait_for(patient, 30)  # woken although a fellow waiter was cancelled
    assert locks.held("k")
    locks.release("k")
    assert len(locks) == 0


async def test_eviction_skips_a_key_a_writer_holds() -> None:
    locks = KeyLocks()
    await locks.acquire("written")
    assert not locks.try_acquire("written")
    assert locks.try_acquire("idle")


async def test_acquire_all_takes_keys_sorted_and_once() -> None:
    locks = KeyLocks()
    assert await locks.acquire_all(["c", "a", "b", "a"]) == ["a", "b", "c"]
    assert len(locks) == 3
    locks.release_all(["a", "b", "c"])
    assert len(locks) == 0


async def test_overlapping_batches_do_not_deadlock() -> None:
    locks = KeyLocks()

    async def batch(keys: list[str]) -> None:
        taken = await locks.acquire_all(keys)
        await settle()
        locks.release_all(taken)

    await asyncio.wait_for(asyncio.gather(*(batch(keys) for keys in (["a", "b", "c"], ["c", "b", "a"], ["b", "a"]))), 30)
    assert len(locks) == 0


async def test_a_batch_cancelled_halfway_releases_what_it_took() -> None:
    locks = KeyLocks()
    await locks.acquire("b")  # the batch takes "a", then waits for "b"
    batch = asyncio.create_task(locks.acquire_all(["c", "a", "b"]))
    await settle()
    assert locks.held("a") and not locks.held("c")
    batch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await batch
    assert not locks.held("a")
    assert locks.held("b")  # still ours
    locks.release("b")
    assert len(locks) == 0
