"""The bubblewrap sandbox: one bwrap per action.

What the action sees:
- the host's filesystem read-only (``--ro-bind / /``), with a fresh ``/dev`` (null,
  zero, random, tty...; a private ``/dev/shm``) and its own ``/proc``;
- its exec root, the only writable tree beside ``/tmp``, at the same path in every
  action (``SANDBOX_EXEC_ROOT``: outputs do not depend on which scratch directory it
  got), and a private ``/tmp`` that is the scratch directory's ``tmp`` on the worker's
  disk (not memory);
- inside the exec root, input subtrees it does not write into mounted read-only
  from the worker's InputTrees (worker/input_trees.py);
- new PID, mount, IPC and UTS namespaces, and a new network namespace (loopback
  only) unless the action may use the network;
- ``--die-with-parent``: the sandbox is SIGKILLed when the worker dies. When the
  sandbox's first process (PID 1 of its namespace) dies, the kernel kills every
  other process in it, so nothing of an action outlives it.

As root, the command runs as the action user with no capabilities and
``no_new_privs``, in one of two ways (``UserSwitch``): where the action user can
reach the work directory, bwrap runs in its setuid mode (worker/sandbox/credentials.py:
no extra process); elsewhere bwrap (which then looks up the paths it binds as that
user, and fails) runs as root and ``setpriv`` switches users inside (one more exec,
about 1 ms).
When a limit needs a cgroup or an rlimit, bwrap waits (``--block-fd``) after creating
the sandbox's first process, which it reports (``--info-fd``); the worker moves both
bwrap processes into the slot's cgroups and sets the rlimits, then lets it go, so
every process of the action is born inside.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from worker.input_root import Mount
from worker.runner import Launched, RunRequest, cannot_run, open_stdio
from worker.sandbox.cgroups import CgroupSlot
from worker.sandbox.credentials import ActionUser, ThreadCredentials
from worker.sandbox.limits import confine_then_go
from worker.sandbox.processes import children_of, pid_namespace, processes_in_namespace, wait_gone
from worker.sandbox.programs import find_program

SANDBOX_TMP = "/tmp"
SANDBOX_EXEC_ROOT = "/tmp/reapi/root"


class UserSwitch(enum.Enum):
    NONE = "none"  # the action runs as the worker's user
    SETUID_MODE = "setuid-mode"  # bwrap exec'd with the action user as real uid
    SETPRIV = "setpriv"  # bwrap as root, then setpriv


def setpriv_argv(user: ActionUser) -> list[str]:
    return ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--"]


class BwrapLauncher:
    """Starts one action's command in a fresh bwrap sandbox."""

    def __init__(self, bwrap: str, user: ActionUser, switch: UserSwitch, credentials: ThreadCredentials,
                 exec_root: Path, tmp: Path, network: bool, slot: CgroupSlot | None = None,
                 rlimits: list[tuple[int, int]] | None = None, mounts: Sequence[Mount] = ()) -> None:
        self.bwrap = bwrap
        self.user = user
        self.switch = switch
        self.credentials = credentials
        self.exec_root = exec_root
        self.tmp = tmp
        self.network = network
        self.slot = slot
        self.rlimits = rlimits or []
        self.mounts = list(mounts)  # read-only subtrees over their (empty) places in the exec root

    def inside(self, host_path: Path) -> str:
        """Where a host path under the exec root appears in the sandbox."""
        relative = os.path.relpath(host_path, self.exec_root)
        return SANDBOX_EXEC_ROOT if relative == "." else f"{SANDBOX_EXEC_ROOT}/{relative}"

    def host_path(self, sandbox_path: str) -> str:
        """Where a sandbox path is on the host (to check a program exists before starting)."""
        places = [(f"{SANDBOX_EXEC_ROOT}/{m.path}", m.source) for m in self.mounts]
        places += [(SANDBOX_EXEC_ROOT, str(self.exec_root)), (SANDBOX_TMP, str(self.tmp))]
        for inside, outside in places:
            if sandbox_path == inside or sandbox_path.startswith(inside + "/"):
                return outside + sandbox_path[len(inside):]
        return sandbox_path

    def argv(self, request: RunRequest, fds: tuple[int, int] | None = None) -> list[str]:
        argv = [self.bwrap, "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
        if not self.network:
            argv.append("--unshare-net")
        if os.geteuid() != 0:
            argv.append("--unshare-user")  # unprivileged bwrap needs a user namespace for the others
        argv += ["--ro-bind", "/", "/", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/dev/shm",
                 "--proc", "/proc", "--bind", str(self.tmp), SANDBOX_TMP,
                 "--perms", "0755", "--dir", os.path.dirname(SANDBOX_EXEC_ROOT),
                 "--bind", str(self.exec_root), SANDBOX_EXEC_ROOT]
        for mount in self.mounts:  # outermost first, each over its empty directory in the exec root
            argv += ["--ro-bind", mount.source, f"{SANDBOX_EXEC_ROOT}/{mount.path}"]
        argv += ["--chdir", self.inside(request.cwd)]
        if fds is not None:
            argv += ["--block-fd", str(fds[0]), "--info-fd", str(fds[1])]
        argv.append("--")
        if self.switch is UserSwitch.SETPRIV:
            argv += setpriv_argv(self.user)
        return argv + list(request.argv)

    def launch(self, request: RunRequest) -> Launched:
        argv0 = request.argv[0]
        problem = find_program(argv0, request.env.get("PATH", ""), request.cwd, self.host_path, self.inside)
        if problem is not None:
            raise cannot_run(argv0, problem)
        return self.spawn(request)

    def spawn(self, request: RunRequest, keep_fds: tuple[int, ...] = ()) -> BwrapLaunched:
        """Start bwrap on ``request`` (``keep_fds`` stay open in the sandbox); not yet ``started``."""
        blocked = self.slot is not None or bool(self.rlimits)
        block_r = block_w = info_r = info_w = -1
        if blocked:
            block_r, block_w = os.pipe()
            info_r, info_w = os.pipe()
        stdout, stderr = open_stdio(request)
        try:
            switching = self.switch is UserSwitch.SETUID_MODE
            as_user = self.credentials.real_ids(self.user) if switching else contextlib.nullcontext()
            with as_user:
                process = subprocess.Popen(
                    self.argv(request, (block_r, info_w) if blocked else None), cwd="/", env=dict(request.env),
                    stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, start_new_session=True,
                    close_fds=True, pass_fds=((block_r, info_w) if blocked else ()) + keep_fds,
                )
        except OSError as exc:
            for fd in (block_r, block_w, info_r, info_w):
                if fd >= 0:
                    os.close(fd)
            raise cannot_run(self.bwrap, exc) from None
        finally:
            os.close(stdout)
            os.close(stderr)
        if blocked:
            os.close(block_r)
            os.close(info_w)
        return BwrapLaunched(process, self, block_w, info_r)


class BwrapLaunched:
    """A running sandbox: ``process`` is the outer bwrap; ``pid1`` the sandbox's first process."""

    def __init__(self, process: subprocess.Popen[bytes], launcher: BwrapLauncher, block_w: int, info_r: int) -> None:
        self.process = process
        self.launcher = launcher
        self.pid1 = 0
        self._block_w = block_w
        self._info_r = info_r
        self._killed = False

    async def started(self) -> None:
        """Into the slot's cgroups and rlimits set (both bwrap processes, while bwrap waits),
        then go. A failure here stops the action before its command ran (the runner kills it)."""
        if self._info_r < 0:
            return
        try:
            info = await _read_json(self._info_r)
        except OSError:
            info = b""
        finally:
            os.close(self._info_r)
            self._info_r = -1
        try:
            self.pid1 = int(json.loads(info)["child-pid"]) if info else 0
        except (ValueError, KeyError, TypeError):
            self.pid1 = 0  # bwrap failed before creating the sandbox: its exit status and stderr say why
        pids = [self.process.pid] + ([self.pid1] if self.pid1 else [])
        confine_then_go(pids, self.launcher.slot, self.launcher.rlimits, self._block_w, b"go")
        self._block_w = -1

    def _first_process(self) -> int:
        if not self.pid1:
            found = children_of(self.process.pid)
            self.pid1 = found[0] if found else 0
        return self.pid1

    def terminate(self) -> None:
        """SIGTERM the action's processes; not bwrap's own two, whose death would SIGKILL them at once."""
        pid1 = self._first_process()
        if not pid1:
            return
        slot = self.launcher.slot
        members = slot.members() if slot is not None else processes_in_namespace(pid_namespace(pid1))
        for pid in members:
            if pid not in (pid1, self.process.pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGTERM)

    def kill(self) -> None:
        pid1 = self._first_process()
        self._killed = True
        for pid in (pid1, self.process.pid):
            if pid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)

    async def finished(self) -> None:
        if self._killed and self.pid1:
            await wait_gone(self.pid1)  # the kernel kills the namespace's other processes first
        slot = self.launcher.slot
        if slot is not None and slot.members():
            await asyncio.to_thread(slot.kill_all)
        for fd in (self._info_r, self._block_w):
            if fd >= 0:
                os.close(fd)
        self._info_r = self._block_w = -1


async def _read_json(fd: int) -> bytes:
    """The JSON object bwrap writes to its info pipe (complete, or whatever came before
    the pipe closed), without blocking the loop."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bytes] = loop.create_future()
    chunks: list[bytes] = []

    def readable() -> None:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError as exc:
            chunk = b""
            if not done.done():
                done.set_exception(exc)
        if chunk:
            chunks.append(chunk)
            try:
                json.loads(b"".join(chunks))
            except ValueError:
                return  # more to come
        loop.remove_reader(fd)
        if not done.done():
            done.set_result(b"".join(chunks))

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)
    try:
        return await done
    finally:
        loop.remove_reader(fd)
