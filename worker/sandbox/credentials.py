"""Who an action runs as, and how the worker hands that identity to bwrap for free.

A worker running as root runs actions as an unprivileged user (``run_as``; by default
``reapi-action``, which deploy/bootstrap.sh creates, else ``nobody``). A worker that is
not root runs them as itself: it cannot become anyone else.

bwrap, exec'd with a *real* uid that is not 0 and an *effective* uid of 0, behaves as a
setuid-root install: it builds the namespaces with root's privileges and then runs the
command as the real uid, with no capabilities and ``no_new_privs``. Linux keeps
credentials per thread and the raw ``setres[ug]id``/``setgroups`` system calls change
only the calling thread (glibc's wrappers would change every thread), so the worker
switches its spawning thread's real ids around one ``vfork`` + ``exec`` of bwrap and
switches back: no extra process and no fork of the (large) worker.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import pwd
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

log = logging.getLogger("reapi.worker.sandbox")

DEFAULT_ACTION_USER = "reapi-action"
FALLBACK_ACTION_USER = "nobody"

# (setgroups, setresuid, setresgid) system call numbers per machine.
_SYSCALLS = {
    "x86_64": (116, 117, 119),
    "aarch64": (159, 147, 149),
    "arm64": (159, 147, 149),
}


@dataclass(frozen=True)
class ActionUser:
    """The identity actions run as."""

    name: str
    uid: int
    gid: int

    @property
    def is_worker(self) -> bool:
        """Whether actions run as the worker's own user (then inputs are copies, never links)."""
        return self.uid == os.geteuid()

    def describe(self) -> str:
        return f"{self.name} (uid {self.uid})"


CAP_SYS_RESOURCE = 24


def worker_is_root() -> bool:
    return os.geteuid() == 0


def has_capability(number: int) -> bool:
    """Whether this process holds a capability (containers often drop some from root)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> number & 1)
    except OSError:
        pass
    return False


def resolve_action_user(run_as: str) -> ActionUser:
    """The user named by ``run_as`` ("" = choose): ValueError if it does not exist or cannot be used."""
    me = pwd.getpwuid(os.geteuid())
    if not worker_is_root():
        if run_as and run_as != me.pw_name and run_as != str(me.pw_uid):
            raise ValueError(f"run_as {run_as!r}: only a worker running as root can run actions as another user "
                             f"(this one runs as {me.pw_name})")
        return ActionUser(me.pw_name, me.pw_uid, me.pw_gid)
    if run_as:
        entry = _lookup(run_as)
        if entry is None:
            raise ValueError(f"run_as {run_as!r}: no such user")
        return ActionUser(entry.pw_name, entry.pw_uid, entry.pw_gid)
    for name in (DEFAULT_ACTION_USER, FALLBACK_ACTION_USER):
        entry = _lookup(name)
        if entry is not None:
            if name == FALLBACK_ACTION_USER:
                log.warning("user %s does not exist (deploy/bootstrap.sh creates it); actions run as %s, "
                            "which other services may share", DEFAULT_ACTION_USER, name)
            return ActionUser(entry.pw_name, entry.pw_uid, entry.pw_gid)
    raise ValueError(f"neither {DEFAULT_ACTION_USER} nor {FALLBACK_ACTION_USER} exists; set run_as")


def _lookup(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        return None


class ThreadCredentials:
    """Switches the calling thread's real uid/gid and groups (Linux, root only)."""

    def __init__(self) -> None:
        numbers = _SYSCALLS.get(platform.machine())
        self.available = numbers is not None and worker_is_root()
        self._setgroups, self._setresuid, self._setresgid = numbers or (0, 0, 0)
        self._libc = ctypes.CDLL(None, use_errno=True) if self.available else None

    def _call(self, number: int, *args: object) -> None:
        assert self._libc is not None
        if self._libc.syscall(number, *args) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))

    @contextmanager
    def real_ids(self, user: ActionUser) -> Iterator[None]:
        """Inside the block this thread has the real uid of ``user`` and effective uid 0,
        and only the user's group (real, effective and saved) as a setuid-root (not
        setgid) install of bwrap would: bwrap leaves the group ids as it finds them."""
        groups = os.getgroups()
        gid, uid = os.getresgid(), os.getresuid()
        self._set_groups([user.gid])
        try:
            self._call(self._setresgid, user.gid, user.gid, user.gid)
            try:
                self._call(self._setresuid, user.uid, 0, 0)
                try:
                    yield
                finally:
                    self._call(self._setresuid, *uid)
            finally:
                self._call(self._setresgid, *gid)
        finally:
            self._set_groups(groups)

    def _set_groups(self, groups: list[int]) -> None:
        array = (ctypes.c_uint * max(1, len(groups)))(*groups)
        self._call(self._setgroups, ctypes.c_size_t(len(groups)), array)
