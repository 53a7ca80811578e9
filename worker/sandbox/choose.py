"""Choosing the sandbox at start: bwrap wherever it runs, else the process fallback.

``sandbox = "auto"`` (the default) tries bwrap for real (the same options as an
action's, running ``true``); if it is missing or fails, the worker uses the process
fallback and logs why and what that gives up. ``"bwrap"`` refuses to start without
it; ``"process"`` never tries it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import subprocess
from pathlib import Path

from worker.runner import RunRequest
from worker.sandbox.bwrap import BwrapLauncher, UserSwitch
from worker.sandbox.cgroups import Cgroups, open_cgroups
from worker.sandbox.credentials import (
    CAP_SYS_RESOURCE, ActionUser, ThreadCredentials, has_capability, resolve_action_user,
)
from worker.sandbox.leftovers import GroupRecords
from worker.sandbox.limits import ActionLimits
from worker.sandbox.sandbox import NetworkPolicy, Sandbox, SandboxMode
from worker.sandbox.warm import find_perl

log = logging.getLogger("reapi.worker.sandbox")

PROBE_TIMEOUT_S = 20.0


class SandboxUnavailable(ValueError):
    """The configured sandbox cannot be had on this machine (the worker does not start)."""


def user_switch(user: ActionUser, credentials: ThreadCredentials, work_dir: Path,
                needs_rlimits: bool) -> tuple[UserSwitch, str]:
    """How bwrap will run actions as ``user``, and, when it costs more, why."""
    if user.uid == os.geteuid():
        return UserSwitch.NONE, ""
    blocked = unreachable_parent(work_dir, user)
    if blocked is not None:
        why = f"{user.name} cannot enter {blocked}, on the way to work_dir"
    elif not credentials.available:
        why = "this machine's architecture has no per-thread user switch here"
    elif needs_rlimits and not has_capability(CAP_SYS_RESOURCE):
        # Setting another user's rlimits takes CAP_SYS_RESOURCE; bwrap's processes stay
        # root's (and so the worker's to limit) until setpriv.
        why = "rlimits are needed and this root lacks CAP_SYS_RESOURCE"
    else:
        return UserSwitch.SETUID_MODE, ""
    return UserSwitch.SETPRIV, why


def probe_bwrap(bwrap: str, user: ActionUser, switch: UserSwitch, credentials: ThreadCredentials,
                work_dir: Path) -> str | None:
    """None if bwrap runs an action here, else why not (blocking)."""
    scratch = work_dir / f".probe-{os.getpid()}"
    try:
        for part in (scratch, scratch / "root", scratch / "tmp"):
            part.mkdir(mode=0o711)
            if user.uid != os.geteuid() and part != scratch:
                os.chown(part, user.uid, user.gid)
        launcher = BwrapLauncher(bwrap, user, switch, credentials, scratch / "root", scratch / "tmp", network=False)
        request = RunRequest(["true"], {"PATH": "/usr/bin:/bin"}, scratch / "root", scratch / "out", scratch / "err")
        with credentials.real_ids(user) if switch is UserSwitch.SETUID_MODE else contextlib.nullcontext():
            done = subprocess.run(launcher.argv(request), cwd="/", stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=PROBE_TIMEOUT_S)
        if done.returncode == 0:
            return None
        message = done.stderr.decode(errors="replace").strip().splitlines()
        return f"bwrap failed: {message[-1] if message else f'exit status {done.returncode}'}"
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bwrap could not be started: {exc}"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def unreachable_parent(path: Path, user: ActionUser) -> Path | None:
    """The first directory on the way to ``path`` that ``user`` may not enter, if any."""
    current = Path("/")
    for part in path.resolve().parts[1:]:
        current = current / part
        try:
            info = os.stat(current)
        except OSError:
            return None
        if info.st_uid == user.uid:
            ok = info.st_mode & stat.S_IXUSR
        elif info.st_gid == user.gid:
            ok = info.st_mode & stat.S_IXGRP
        else:
            ok = info.st_mode & stat.S_IXOTH
        if not ok:
            return current
    return None


def open_sandbox(mode: SandboxMode, run_as: str, network: NetworkPolicy, limits: ActionLimits, bwrap: str,
                 use_cgroups: bool, work_dir: Path, concurrency: int, input_mounts: bool = True) -> Sandbox:
    """The sandbox this worker can have (blocking; at start, after the work directory is emptied)."""
    try:
        user = resolve_action_user(run_as)
    except ValueError as exc:
        raise SandboxUnavailable(str(exc)) from None
    credentials = ThreadCredentials()
    chosen, reason = SandboxMode.PROCESS, "sandbox = \"process\" in the configuration"
    wanted = {name for name, value in (("memory", limits.memory), ("pids", limits.processes)) if value}
    cgroups = Cgroups([], 0)
    if use_cgroups and wanted:  # for limits; bwrap's PID namespace kills without one
        cgroups = open_cgroups(work_dir, concurrency, wanted)
    needs_rlimits = bool(limits.rlimits(memory_by_cgroup=cgroups.limits_memory))
    switch, switch_why = user_switch(user, credentials, work_dir, needs_rlimits)
    if mode is not SandboxMode.PROCESS:
        found = shutil.which(bwrap)
        if found is None:
            reason = f"{bwrap!r} is not installed (Debian: apt-get install bubblewrap)"
        elif switch is UserSwitch.SETPRIV and shutil.which("setpriv") is None:
            reason = f"{switch_why}, and setpriv (util-linux) is not installed to switch users otherwise"
        else:
            problem = probe_bwrap(found, user, switch, credentials, work_dir)
            if problem is None:
                chosen, reason, bwrap = SandboxMode.BWRAP, "", found
            else:
                reason = problem
        if chosen is not SandboxMode.BWRAP and mode is SandboxMode.BWRAP:
            cgroups.remove()
            raise SandboxUnavailable(f"sandbox = \"bwrap\" but {reason}")
    if chosen is SandboxMode.PROCESS and user.uid != os.geteuid():
        blocked = unreachable_parent(work_dir, user)
        if blocked is not None:
            cgroups.remove()
            raise SandboxUnavailable(
                f"actions run as {user.describe()} without bwrap, in work_dir {work_dir}, but {blocked} does not "
                f"let that user in; put work_dir (and cache_dir) where it can enter, e.g. under /var/cache")
    if chosen is SandboxMode.PROCESS and use_cgroups and not cgroups.hierarchies:
        cgroups = open_cgroups(work_dir, concurrency, wanted)  # the fallback's kill needs one anyway
    # Without a cgroup to find them after a crash, running groups are recorded on disk.
    recorded = chosen is SandboxMode.PROCESS and not cgroups.can_kill
    records = GroupRecords(work_dir if recorded else None, user.uid)
    if chosen is SandboxMode.BWRAP and switch is UserSwitch.SETPRIV:
        reason = f"{switch_why}: bwrap runs as root and setpriv switches users, one more exec per action"
    perl = find_perl() if chosen is SandboxMode.BWRAP else None
    return Sandbox(chosen, reason, user, switch, credentials, cgroups, limits, network, bwrap, work_dir, concurrency,
                   records, perl, input_mounts)
