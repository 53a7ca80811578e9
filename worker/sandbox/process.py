"""The fallback where bwrap cannot run: the action user, a process group, cgroups, rlimits.

The worker never forks itself (a fork of a process running gRPC's threads may crash
in the child, and costs more than ``vfork``): it spawns a tiny shell that waits for
one line on its stdin. While it waits, the worker moves it into the slot's cgroups
and sets its rlimits (memory as ``RLIMIT_AS`` when no cgroup limits memory, file
size); then it lets it go and the shell execs ``setpriv``, which drops to the action
user (when the worker is root) and asks for SIGKILL when the worker dies
(``--pdeathsig``), and execs the command. Every process of the action is born in its
cgroups, and the command's pid is the spawned one's (``$$``, ``$PPID`` as without a
sandbox).

When the action ends, its process group is killed, then its cgroup (which also finds
processes that left the group), then, in a worker process, the orphans it adopted
(worker/sandbox/reaper.py); without a cgroup the group's id is recorded on disk
(worker/sandbox/leftovers.py) so a worker restarted after a crash can kill what
stayed in it. What this mode does not give (the start-up log says so): a private view
of the filesystem, a private network, and (without a cgroup) a sure way to find
processes that start their own session.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess

from worker.runner import Launched, RunRequest, cannot_run, open_stdio, signal_group
from worker.sandbox.cgroups import CgroupSlot
from worker.sandbox.credentials import ActionUser
from worker.sandbox.leftovers import GroupRecords
from worker.sandbox.limits import confine_then_go
from worker.sandbox.programs import find_program
from worker.sandbox.reaper import OrphanReaper

# Waits for the worker's go-ahead (one line on stdin), then becomes the command, with
# /dev/null as its stdin.
_WAIT_THEN_EXEC = 'read -r _ && exec "$@" < /dev/null'


def setpriv_argv(user: ActionUser | None) -> list[str]:
    """``setpriv`` to the action user (or none), no capabilities, SIGKILL on the worker's death."""
    argv = ["setpriv"]
    if user is not None:
        argv += [f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups",
                 "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    return argv + ["--pdeathsig", "KILL", "--"]


class ProcessLauncher:
    def __init__(self, user: ActionUser, slot: CgroupSlot | None, rlimits: list[tuple[int, int]],
                 records: GroupRecords, reaper: OrphanReaper | None = None) -> None:
        self.user = user
        self.slot = slot
        self.rlimits = rlimits
        self.records = records
        self.reaper = reaper

    def argv(self, request: RunRequest) -> list[str]:
        switch = self.user if self.user.uid != os.geteuid() else None
        return ["sh", "-c", _WAIT_THEN_EXEC, "reapi-action", *setpriv_argv(switch), *request.argv]

    def launch(self, request: RunRequest) -> Launched:
        argv0 = request.argv[0]
        problem = find_program(argv0, request.env.get("PATH", ""), request.cwd, str, str)
        if problem is not None:
            raise cannot_run(argv0, problem)
        go_r, go_w = os.pipe()
        stdout, stderr = open_stdio(request)
        try:
            process = subprocess.Popen(
                self.argv(request), cwd=request.cwd, env=dict(request.env), stdin=go_r,
                stdout=stdout, stderr=stderr, start_new_session=True, close_fds=True,
            )
        except OSError as exc:
            os.close(go_w)
            raise cannot_run(argv0, exc) from None
        finally:
            os.close(go_r)
            os.close(stdout)
            os.close(stderr)
        self.records.add(process.pid)
        return ProcessLaunched(process, self, go_w)


class ProcessLaunched:
    def __init__(self, process: subprocess.Popen[bytes], launcher: ProcessLauncher, go: int) -> None:
        self.process = process
        self.launcher = launcher
        self._go = go

    async def started(self) -> None:
        """Into the cgroups, rlimits set, then go. A failure here stops the action before
        its command ran (the runner kills it; the shell, seeing no go-ahead, exits)."""
        confine_then_go([self.process.pid], self.launcher.slot, self.launcher.rlimits, self._go, b"go\n")
        self._go = -1

    def terminate(self) -> None:
        signal_group(self.process.pid, signal.SIGTERM)

    def kill(self) -> None:
        signal_group(self.process.pid, signal.SIGKILL)
        if self.launcher.slot is not None:
            self.launcher.slot.kill_now()

    async def finished(self) -> None:
        if self._go >= 0:
            os.close(self._go)
            self._go = -1
        # The leader is a zombie until reaped, so its group id cannot be reused yet.
        signal_group(self.process.pid, signal.SIGKILL)
        slot = self.launcher.slot
        if slot is not None and [p for p in slot.members() if p != self.process.pid]:
            await asyncio.to_thread(slot.kill_all)
        records = self.launcher.records
        if self.launcher.reaper is not None:
            self.launcher.reaper.sweep(records.running)  # this action's leader is still listed: not reaped here
        records.remove(self.process.pid)
