"""An action's scratch directory: made on the event loop on a memory filesystem, on a thread elsewhere."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from worker.sandbox import sandbox as sandbox_module
from worker.sandbox.choose import open_sandbox
from worker.sandbox.limits import ActionLimits
from worker.sandbox.sandbox import NetworkPolicy, SandboxMode


def _open(work_dir: Path):  # type: ignore[no-untyped-def]
    return open_sandbox(SandboxMode.PROCESS, "root", NetworkPolicy.OFF, ActionLimits(), "bwrap", False, work_dir, 1)


async def _scratch_made(work_dir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[Any]]:
    jobs: list[Any] = []
    real = asyncio.to_thread

    async def counted(function: Any, *args: Any) -> Any:
        jobs.append(function)
        return await real(function, *args)

    monkeypatch.setattr(sandbox_module.asyncio, "to_thread", counted)
    sandbox = _open(work_dir)
    async with sandbox.action(False, mounts=True) as run:  # mounts: a new scratch, not one made ready
        assert (run.scratch / "root").is_dir() and (run.scratch / "tmp").is_dir()
        return run.scratch, jobs


async def test_scratch_on_a_memory_filesystem_is_made_without_a_thread_job(monkeypatch: pytest.MonkeyPatch) -> None:
    work_dir = Path(tempfile.mkdtemp(prefix="reapi-scratch-", dir="/dev/shm"))
    try:
        scratch, jobs = await _scratch_made(work_dir, monkeypatch)
        assert scratch.parent == work_dir and jobs == []
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


async def test_scratch_on_a_disk_is_made_on_a_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sandbox asks ``in_memory`` once (tested on this host's mounts in test_cold_inputs.py);
    here it says "a disk" whatever filesystem tmp_path is on, so the test runs everywhere."""
    monkeypatch.setattr(sandbox_module, "in_memory", lambda path: False)
    _, jobs = await _scratch_made(tmp_path, monkeypatch)
    assert jobs == [sandbox_module.make_scratch]
