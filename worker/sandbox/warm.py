"""Sandboxes made ready before their action arrives: bwrap's setup off the critical path.

Setting up a bwrap sandbox (namespaces, mounts, the user switch) costs 3-7 ms of one
core on the development machine, several times the run of a small command. So each
slot keeps one sandbox ready: its scratch directory (``root``, ``tmp``, ``stdout``,
``stderr``) made, bwrap started on it (the exec root already bound, in its cgroups,
with its rlimits) and, inside, a trampoline waiting on a pipe. When an action takes
the slot its inputs go into the waiting ``root``, and the command is sent down the
pipe as NUL-separated fields (working directory, environment, argv): the trampoline
changes directory, replaces the environment and execs it, so the command is the
process it would have been. After the action the slot makes its next sandbox in the
background. Actions that need another kind (the network) start a sandbox of their own.

The trampoline is Perl, which Debian always has (perl-base is essential); without
``perl`` no sandbox is kept ready and each action starts its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import uuid
from pathlib import Path

from cas.errors import InvalidArgument
from worker.runner import Launched, RunRequest, cannot_run
from worker.sandbox.bwrap import SANDBOX_EXEC_ROOT, BwrapLaunched, BwrapLauncher
from worker.sandbox.programs import find_program

log = logging.getLogger("reapi.worker.sandbox")

# Reads its command from the fd it is given: cwd, the number of variables, K=V..., argv.
TRAMPOLINE = (
    'open(my $c, "<&=", $ARGV[0]) or die "reapi trampoline: no control fd: $!\\n"; local $/; my $m = <$c>; '
    'close $c; exit 0 if !defined $m || $m eq ""; my @f = split(/\\0/, $m, -1); my $cwd = shift @f; '
    'my $n = shift @f; %ENV = (); for (1..$n) { my ($k, $v) = split(/=/, shift(@f), 2); $ENV{$k} = $v; } '
    'chdir $cwd or die "cannot change to the working directory $cwd: $!\\n"; '
    'exec { $f[0] } @f or do { print STDERR "cannot run $f[0]: $!\\n"; exit 127 };'
)


def control_message(cwd: str, env: dict[str, str], argv: list[str]) -> bytes:
    fields = [cwd, str(len(env)), *(f"{k}={v}" for k, v in env.items()), *argv]
    if any("\0" in field for field in fields):
        raise InvalidArgument("the Command's arguments or environment contain a NUL character")
    return "\0".join(fields).encode()


class ReadySandbox:
    """One sandbox waiting for its command, on its own scratch directory."""

    def __init__(self, scratch: Path, launched: BwrapLaunched, launcher: BwrapLauncher, control: int) -> None:
        self.scratch = scratch
        self.launched = launched
        self.launcher = launcher
        self._control = control

    @property
    def alive(self) -> bool:
        return self.launched.process.poll() is None

    def launch(self, request: RunRequest) -> Launched:
        """Send the command; the sandbox becomes this action's (the runner's launcher)."""
        argv0 = request.argv[0]
        problem = find_program(argv0, request.env.get("PATH", ""), request.cwd, self.launcher.host_path,
                               self.launcher.inside)
        if problem is not None:
            raise cannot_run(argv0, problem)
        message = control_message(self.launcher.inside(request.cwd), dict(request.env), list(request.argv))
        try:
            view = memoryview(message)
            while view:
                view = view[os.write(self._control, view):]
        finally:
            os.close(self._control)
            self._control = -1
        return self.launched

    async def discard(self) -> None:
        """Never used: stop it (its trampoline sees the pipe close and exits) and reap it."""
        if self._control >= 0:
            os.close(self._control)
            self._control = -1
        self.launched.kill()
        await self.launched.finished()
        await asyncio.to_thread(self.launched.process.wait)


async def make_ready(launcher_for: object, work_dir: Path, owner: tuple[int, int] | None, perl: str) -> ReadySandbox:
    """A sandbox on a new scratch directory, its trampoline waiting (blocking parts on a thread)."""
    scratch = work_dir / uuid.uuid4().hex
    await asyncio.to_thread(make_scratch, scratch, owner)
    launcher: BwrapLauncher = launcher_for(scratch)  # type: ignore[operator]
    control_r, control_w = os.pipe()
    try:
        request = RunRequest([perl, "-e", TRAMPOLINE, str(control_r)], {"PATH": "/usr/bin:/bin"}, scratch / "root",
                             scratch / "stdout", scratch / "stderr")
        launched = launcher.spawn(request, keep_fds=(control_r,))
    except BaseException:
        os.close(control_w)
        await asyncio.to_thread(shutil.rmtree, scratch, True)
        raise
    finally:
        os.close(control_r)
    try:
        await launched.started()
    except BaseException:
        os.close(control_w)
        launched.kill()
        await launched.finished()
        raise
    return ReadySandbox(scratch, launched, launcher, control_w)


def make_scratch(scratch: Path, owner: tuple[int, int] | None) -> None:
    """The action's directory: its exec root, stdout/stderr and its /tmp. The action user
    may pass through it (not list it) to reach its exec root (blocking)."""
    os.mkdir(scratch, 0o700 if owner is None else 0o711)
    for part in ("root", "tmp"):
        os.mkdir(scratch / part, 0o755 if part == "root" else 0o700)
        if owner is not None:
            os.chown(scratch / part, *owner)


class WarmSlots:
    """At most one ready sandbox per slot, made in the background after each action."""

    def __init__(self, slots: int) -> None:
        self._ready: dict[int, asyncio.Task[ReadySandbox]] = {}
        self._slots = slots

    def prepare(self, slot: int, make: object) -> None:
        """Start making the slot's next sandbox (``make``: a coroutine function)."""
        if slot not in self._ready:
            self._ready[slot] = asyncio.ensure_future(make())  # type: ignore[operator]

    async def take(self, slot: int) -> ReadySandbox | None:
        """The slot's ready sandbox (waiting for one being made), or None."""
        task = self._ready.pop(slot, None)
        if task is None:
            return None
        try:
            ready = await asyncio.shield(task)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - an action starts its own instead
            log.warning("a sandbox could not be made ready: %s", exc)
            return None
        if not ready.alive:
            await ready.discard()
            return None
        return ready

    async def close(self) -> None:
        tasks = list(self._ready.values())
        self._ready.clear()
        for task in tasks:
            with contextlib.suppress(Exception):
                ready = await task
                await ready.discard()
                await asyncio.to_thread(shutil.rmtree, ready.scratch, True)


def find_perl() -> str | None:
    return shutil.which("perl", path="/usr/bin:/bin")


__all__ = ["SANDBOX_EXEC_ROOT", "ReadySandbox", "WarmSlots", "find_perl", "make_ready", "make_scratch"]
