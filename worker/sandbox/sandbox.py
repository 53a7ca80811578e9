"""The worker's sandbox: the mode chosen at start, and what each action runs inside.

``Sandbox`` is built once (worker/sandbox/choose.py picks the mode and says why);
``LocalExecutor`` asks it, per action, for a launcher (``action``), for how inputs
must be placed so the action cannot change the worker's cache (``placement``), and
afterwards for the limit the action ran into, if any.
"""

from __future__ import annotations

import asyncio
import enum
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from cas.errors import ResourceExhausted
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from worker.disk import in_memory
from worker.input_root import Mount, Placement
from worker.runner import Launcher, RunResult
from worker.sandbox.bwrap import BwrapLauncher, UserSwitch
from worker.sandbox.cgroups import Cgroups, CgroupSlot, SlotCounters
from worker.sandbox.credentials import ActionUser, ThreadCredentials
from worker.sandbox.leftovers import GroupRecords
from worker.sandbox.limits import ActionLimits, exceeded
from worker.sandbox.process import ProcessLauncher
from worker.sandbox.reaper import OrphanReaper
from worker.sandbox.warm import ReadySandbox, WarmSlots, make_ready, make_scratch

NETWORK_PROPERTY = "network"


class SandboxMode(enum.Enum):
    AUTO = "auto"
    BWRAP = "bwrap"
    PROCESS = "process"


class NetworkPolicy(enum.Enum):
    OFF = "off"  # never
    ON_REQUEST = "on_request"  # when the action asks (platform property network=on)
    ON = "on"  # always

    def offered(self) -> list[str]:
        """The values of the ``network`` platform property this worker offers."""
        return {"off": ["off"], "on_request": ["off", "on"], "on": ["on"]}[self.value]


def wants_network(action: re_pb2.Action, command: re_pb2.Command) -> bool:
    platform = action.platform if action.platform.properties else command.platform
    return any(p.name.strip().lower() == NETWORK_PROPERTY and p.value.strip().lower() == "on"
               for p in platform.properties)


class ActionRun:
    """One action's scratch directory (with an empty ``root``), its launcher, its cgroup
    slot, and the counters to judge it by afterwards."""

    def __init__(self, scratch: Path, launcher: Launcher, slot: CgroupSlot | None, limits: ActionLimits,
                 memory_by: str) -> None:
        self.scratch = scratch
        self.launcher = launcher
        self.slot = slot
        self.limits = limits
        self.memory_by = memory_by
        self.before: SlotCounters | None = slot.counters() if slot is not None else None

    def mount(self, mounts: Sequence[Mount]) -> None:
        """Mount these read-only subtrees into the exec root when the action starts
        (a bwrap started for this action: ``Sandbox.action(..., mounts=True)``)."""
        if mounts:
            assert isinstance(self.launcher, BwrapLauncher), "only a new bwrap sandbox mounts subtrees"
            self.launcher.mounts = list(mounts)

    def exceeded(self, result: RunResult) -> ResourceExhausted | None:
        after = self.slot.counters() if self.slot is not None else None
        return exceeded(self.limits, self.before, after, result.exit_code, self.memory_by)


class Sandbox:
    def __init__(self, mode: SandboxMode, reason: str, user: ActionUser, switch: UserSwitch,
                 credentials: ThreadCredentials, cgroups: Cgroups, limits: ActionLimits, network: NetworkPolicy,
                 bwrap: str, work_dir: Path, concurrency: int, records: GroupRecords | None = None,
                 perl: str | None = None, input_mounts: bool = True) -> None:
        self.mode = mode
        self.work_dir = work_dir
        # On a memory filesystem an action's scratch (three directories) is made on the event
        # loop: tens of microseconds, where a thread job's round trip costs a few hundred.
        self.scratch_inline = in_memory(work_dir)
        self.reason = reason
        self.user = user
        self.switch = switch
        self.credentials = credentials
        self.cgroups = cgroups
        self.limits = limits
        self.network = network
        self.bwrap = bwrap
        self.records = records or GroupRecords(None, user.uid)
        self.reaper: OrphanReaper | None = None
        self._slots: asyncio.Queue[int] = asyncio.Queue()
        for index in range(concurrency):
            self._slots.put_nowait(index)
        # Without a network, actions get sandboxes made ready beforehand (worker/sandbox/warm.py).
        self.perl = perl if mode is SandboxMode.BWRAP else None
        self._warm = WarmSlots(concurrency) if self.perl is not None else None
        # Links to the cache only where the action cannot write through them: it runs as
        # another user than the cache's owner, and not as root. Copies otherwise.
        separate = user.uid != os.geteuid()
        # A read-only mount holds whatever user the action runs as, except root (which
        # could remount it): subtrees it does not write into are mounted, not linked.
        mounts = input_mounts and mode is SandboxMode.BWRAP and user.uid != 0
        self.placement = Placement(copy=not separate or user.uid == 0,
                                   owner=(user.uid, user.gid) if separate else None, mounts=mounts)

    @property
    def memory_by(self) -> str:
        if self.limits.memory and self.cgroups.limits_memory:
            return "cgroup memory controller"
        return "RLIMIT_AS"

    def network_for(self, action: re_pb2.Action, command: re_pb2.Command) -> bool:
        if self.network is NetworkPolicy.ON:
            return True
        return self.network is NetworkPolicy.ON_REQUEST and wants_network(action, command)

    def _slot(self, index: int) -> CgroupSlot | None:
        slot = self.cgroups.slots[index] if index < len(self.cgroups.slots) else None
        if slot is not None:
            slot.set_limits(self.limits.memory if self.cgroups.limits_memory else None,
                            self.limits.processes if self.cgroups.limits_pids else None)
        return slot

    def _bwrap(self, scratch: Path, network: bool, index: int) -> BwrapLauncher:
        rlimits = self.limits.rlimits(memory_by_cgroup=self.cgroups.limits_memory)
        return BwrapLauncher(self.bwrap, self.user, self.switch, self.credentials, scratch / "root",
                             scratch / "tmp", network, self._slot(index), rlimits)

    def start(self) -> None:
        """Make a sandbox ready for every slot (in the background)."""
        for index in range(self._slots.qsize()):
            self._prepare(index)

    def _prepare(self, index: int) -> None:
        if self._warm is None or self.perl is None:
            return
        perl = self.perl

        async def make() -> ReadySandbox:
            return await make_ready(lambda scratch: self._bwrap(scratch, False, index), self.work_dir,
                                    self.placement.owner, perl)
        self._warm.prepare(index, make)

    @asynccontextmanager
    async def action(self, network: bool, mounts: bool = False) -> AsyncIterator[ActionRun]:
        """A scratch directory and a launcher for one action, for the block's length;
        ``mounts``: read-only subtrees will be mounted into it (``ActionRun.mount``),
        which a sandbox made ready beforehand cannot take: a new one is started."""
        index = await self._slots.get()
        try:
            ready = await self._warm.take(index) if self._warm is not None and not network and not mounts else None
            launcher: Launcher
            if ready is not None:
                scratch, launcher = ready.scratch, ready
            else:
                scratch = self.work_dir / uuid.uuid4().hex
                if self.scratch_inline:
                    make_scratch(scratch, self.placement.owner)
                else:
                    await asyncio.to_thread(make_scratch, scratch, self.placement.owner)
                if self.mode is SandboxMode.BWRAP:
                    launcher = self._bwrap(scratch, network, index)
                else:
                    rlimits = self.limits.rlimits(memory_by_cgroup=self.cgroups.limits_memory)
                    launcher = ProcessLauncher(self.user, self._slot(index), rlimits, self.records, self.reaper)
            yield ActionRun(scratch, launcher, self._slot(index), self.limits, self.memory_by)
        finally:
            self._slots.put_nowait(index)
            self._prepare(index)

    def describe(self) -> str:
        if self.mode is SandboxMode.BWRAP:
            spaces = "pid, mount, ipc, uts" + {"off": " and network", "on_request": " and network (unless the "
                                               "action asks for network=on)", "on": ""}[self.network.value]
            what = f"bwrap ({spaces} namespaces; the system read-only; writable: the exec root and a private /tmp)"
            if self.reason:
                what += f" ({self.reason})"
        else:
            what = f"process fallback ({self.reason})"
        inputs = "copies" if self.placement.copy else "links to read-only files the action user does not own"
        if self.placement.mounts:
            inputs += "; subtrees it does not write into mounted read-only, made once each"
        return (f"{what}; actions run as {self.user.describe()}; inputs: {inputs}; "
                f"{self.cgroups.describe()}; limits: {self.describe_limits()}")

    def describe_limits(self) -> str:
        parts = []
        if self.limits.memory:
            parts.append(f"memory {self.limits.memory} bytes by {self.memory_by}")
        if self.limits.processes:
            parts.append(f"{self.limits.processes} processes" if self.cgroups.limits_pids
                         else "no process limit (no pids cgroup)")
        if self.limits.stdio:
            parts.append(f"stdout/stderr {self.limits.stdio} bytes each")
        if self.limits.outputs:
            parts.append(f"outputs {self.limits.outputs} bytes")
        return ", ".join(parts) or "none"

    def weaker(self) -> list[str]:
        """What this worker cannot guarantee, for the start-up log."""
        notes = []
        if self.mode is SandboxMode.PROCESS:
            notes.append("actions see the host's filesystem and may write wherever their user may; the network "
                         "is not isolated; /tmp is shared")
            if not self.cgroups.can_kill:
                notes.append("without a cgroup, processes that leave the action's process group are found only "
                             "as orphans the worker adopts, which with concurrency > 1 cannot always be told "
                             "apart from a running action's, nor after the worker itself died")
        if self.placement.copy:
            notes.append("actions run as the worker's own user, so inputs are copied (slower) rather than linked")
        if self.limits.memory and not self.cgroups.limits_memory:
            notes.append("memory is limited by RLIMIT_AS (address space per process, not the action's total), "
                         "and hitting it is not reported as such")
        if self.limits.processes and not self.cgroups.limits_pids:
            notes.append("max_processes is not enforced: no pids cgroup")
        return notes

    def adopt_orphans(self) -> None:
        """In a worker process using the process fallback: become the parent of the
        actions' orphans, to kill them (worker/sandbox/reaper.py)."""
        if self.mode is SandboxMode.PROCESS:
            self.reaper = OrphanReaper()

    async def aclose(self) -> None:
        """At shutdown: stop the sandboxes kept ready, then remove the cgroups."""
        if self._warm is not None:
            await self._warm.close()
        self.cgroups.remove()
