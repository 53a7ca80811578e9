"""The process fallback's last resort: adopt the actions' orphans, and kill them.

A process that double-forks (``(cmd &)``, ``setsid``) leaves its action's process
group. With ``PR_SET_CHILD_SUBREAPER`` the worker, not init, becomes the parent of
such orphans, so it can still find them: when an action ends, every child of the
worker that is not a running action (nor in a running action's group or session) is
an orphan of a finished one, and is killed and reaped. Only a worker *process* sets
this (``reapi-worker``: it starts nothing but actions); a worker embedded in another
program (tests) relies on process groups and cgroups alone.

Weak spot, said at start: with several actions at once, an orphan of a running action
that also left its session looks like a finished one's and is killed early.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal

from worker.sandbox.processes import children_of, stat_fields

PR_SET_CHILD_SUBREAPER = 36


class OrphanReaper:
    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.enabled = libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
        self.killed = 0

    def sweep(self, running: set[int]) -> None:
        """Kill and reap this worker's children that belong to no running action (``running``: their pids)."""
        if not self.enabled:
            return
        for pid in children_of(os.getpid()):
            if pid in running:
                continue
            fields = stat_fields(pid)
            if fields is None:
                continue
            state, group, session = fields[0], int(fields[2]), int(fields[3])
            if group in running or session in running:
                continue
            if state != "Z":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    self.killed += 1
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # a zombie now or at the next sweep
