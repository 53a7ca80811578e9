"""Per-action limits: how each is enforced, and the status that names the one exceeded.

| limit | enforced by | seen by the worker as |
|---|---|---|
| ``memory_limit`` | cgroup memory (v2 ``memory.max`` / v1 ``memory.limit_in_bytes``): the kernel OOM-kills the action; else ``RLIMIT_AS`` | the group's ``oom_kill`` counter; with ``RLIMIT_AS`` allocations just fail, and the action's own exit says so |
| ``max_processes`` | cgroup ``pids.max`` (no rlimit stands in: ``RLIMIT_NPROC`` counts every process of the user) | the group's ``pids.events`` ``max`` counter |
| ``max_output_size`` | ``RLIMIT_FSIZE`` (no file the action writes may grow past it: SIGXFSZ) and the sum of declared outputs after the run | the signal, or the sum |
| ``max_stdio_size`` | the worker watches stdout and stderr while the action runs and kills it past the cap | the watch |

Every one fails the action with RESOURCE_EXHAUSTED naming the limit and its value.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
from collections.abc import Sequence
from dataclasses import dataclass

from cas.errors import ResourceExhausted
from worker.sandbox.cgroups import CgroupSlot, SlotCounters


def confine_then_go(
    pids: Sequence[int], slot: CgroupSlot | None, rlimits: Sequence[tuple[int, int]], go_fd: int, go: bytes
) -> None:
    """Put a launched action's waiting processes into its cgroup slot and set its rlimits,
    then write ``go`` to the pipe they wait on and close it, so the command only ever runs
    confined. A process that died already is left to its exit status."""
    try:
        for pid in pids:
            if slot is not None:
                slot.join(pid)
            for which, value in rlimits:
                resource.prlimit(pid, which, (value, value))
    except ProcessLookupError:
        pass
    with contextlib.suppress(OSError):
        os.write(go_fd, go)
    os.close(go_fd)


def size_text(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.4g} {unit}"
    return f"{size} bytes"


@dataclass(frozen=True)
class ActionLimits:
    memory: int | None = None  # bytes
    processes: int | None = None
    stdio: int | None = None  # bytes, each of stdout and stderr
    outputs: int | None = None  # bytes, the declared outputs together (and any one file)

    def rlimits(self, memory_by_cgroup: bool) -> list[tuple[int, int]]:
        """The (resource, value) pairs to set on the action's first process."""
        limits = []
        if self.memory and not memory_by_cgroup:
            limits.append((resource.RLIMIT_AS, self.memory))
        if self.outputs:
            limits.append((resource.RLIMIT_FSIZE, self.outputs))
        return limits


def exceeded(limits: ActionLimits, before: SlotCounters | None, after: SlotCounters | None,
             exit_code: int, memory_by: str) -> ResourceExhausted | None:
    """The limit the action ran into, if the kernel's counters (or its death) say so."""
    if before is not None and after is not None:
        if limits.memory and after.oom_kills > before.oom_kills:
            return ResourceExhausted(
                f"the action exceeded its memory limit (memory_limit = {size_text(limits.memory)}, {memory_by}) "
                "and was killed")
        if limits.processes and after.pids_refused > before.pids_refused:
            return ResourceExhausted(
                f"the action tried to run more than max_processes = {limits.processes} processes at once")
    if limits.outputs and exit_code == 128 + signal.SIGXFSZ:
        return ResourceExhausted(
            f"the action wrote a file larger than max_output_size = {size_text(limits.outputs)} (killed by SIGXFSZ)")
    return None


def stdio_exceeded(limits: ActionLimits, stream: str) -> ResourceExhausted:
    assert limits.stdio is not None
    return ResourceExhausted(
        f"the action's {stream} exceeded max_stdio_size = {size_text(limits.stdio)}; it was killed "
        f"and its {stream} cut there")


def outputs_exceeded(limits: ActionLimits, total: int) -> ResourceExhausted:
    assert limits.outputs is not None
    return ResourceExhausted(
        f"the action's outputs take {size_text(total)}, more than max_output_size = {size_text(limits.outputs)}")
