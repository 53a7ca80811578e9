"""Finding and waiting for an action's processes through /proc (Linux)."""

from __future__ import annotations

import asyncio
import os
import time


def children_of(pid: int) -> list[int]:
    """The children of every thread of ``pid``."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(child) for child in f.read().split()]
        except OSError:
            continue
    return found


def pid_namespace(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return ""


def processes_in_namespace(namespace: str) -> list[int]:
    """Every process (as the worker numbers them) whose PID namespace is ``namespace``."""
    if not namespace:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and pid_namespace(int(entry)) == namespace:
            found.append(int(entry))
    return found


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name: [state, ppid, pgrp, session, ...]."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def gone(pid: int) -> bool:
    fields = stat_fields(pid)
    return fields is None or fields[0] in ("Z", "X")


async def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    """Wait until ``pid`` has exited (any process, not only a child; it may stay a zombie)."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        fd = -1
    if fd >= 0:
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(fd, readable)
        try:
            await asyncio.wait_for(exited, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            loop.remove_reader(fd)
            os.close(fd)
    deadline = time.monotonic() + timeout
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True
