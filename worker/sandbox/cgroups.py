"""Control groups for actions: one group per action slot, for limits and a sure kill.

What a machine offers differs, so each job takes the best mechanism it has:

- **kill** everything of an action: cgroup v2 ``cgroup.kill`` (any v2 group, no
  controller needed), else the v1 ``pids`` or ``memory`` group's process list, killed
  until empty;
- **memory** limit: v2 ``memory.max`` when the memory controller can be enabled for
  our groups, else v1 ``memory.limit_in_bytes``;
- **process count**: v2 ``pids.max``, else v1 ``pids.max``.

A hierarchy is used only where the worker may create groups in its own cgroup
(root, or a delegated subtree); otherwise the job has no cgroup ("none delegated")
and worker/sandbox/limits.py falls back to rlimits. The worker's groups are named
after its work directory, so a restarted worker finds the groups of its previous
life, kills what is left in them and removes them before taking work.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("reapi.worker.sandbox")

EMPTY_WAIT_S = 5.0


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _counter(path: Path, key: str) -> int:
    """A ``key value`` line of a flat-keyed cgroup file (``memory.events``, ``pids.events``...)."""
    for line in _read(path).splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def _own_cgroups() -> dict[str, str]:
    """Controller (or "" for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    own: dict[str, str] = {}
    for line in _read(Path("/proc/self/cgroup")).splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            own[controller] = path
    return own


def _mounts() -> dict[str, Path]:
    """Controller (or "" for the v2 hierarchy) -> where it is mounted."""
    mounts: dict[str, Path] = {}
    for line in _read(Path("/proc/self/mountinfo")).splitlines():
        before, _, after = line.partition(" - ")
        fields, extra = before.split(), after.split()
        if len(fields) < 5 or len(extra) < 3:
            continue
        point, fstype, options = Path(fields[4]), extra[0], extra[2].split(",")
        if fstype == "cgroup2":
            mounts.setdefault("", point)
        elif fstype == "cgroup":
            for option in options:
                mounts.setdefault(option, point)
    return mounts


def group_name(work_dir: Path) -> str:
    """Stable across restarts of one worker, distinct between workers on one machine."""
    return "reapi-worker-" + hashlib.sha256(str(work_dir.resolve()).encode()).hexdigest()[:12]


@dataclass
class Hierarchy:
    """One hierarchy's directory for this worker's groups."""

    version: int  # 1 or 2
    base: Path  # the worker's group; slots are its children
    controllers: frozenset[str]  # what our slots can limit here ("memory", "pids")

    def slot(self, index: int) -> Path:
        return self.base / f"slot-{index}"


def _make_v2(mount: Path, own: str, name: str, wanted: set[str]) -> Hierarchy | None:
    parent = mount / own.lstrip("/")
    base = parent / name
    try:
        _clear_leftovers(base, 2)
        base.mkdir()
    except OSError as exc:
        log.debug("cgroup v2 at %s not usable: %s", parent, exc)
        return None
    enabled: set[str] = set()
    for controller in sorted(wanted):
        if controller not in _read(base / "cgroup.controllers").split():
            try:  # offered to our parent's children? (fails unless delegated, or when the parent has processes)
                (parent / "cgroup.subtree_control").write_text(f"+{controller}")
            except OSError:
                continue
        try:
            (base / "cgroup.subtree_control").write_text(f"+{controller}")
            enabled.add(controller)
        except OSError:
            continue
    return Hierarchy(2, base, frozenset(enabled))


def _make_v1(mount: Path, own: str, name: str, controller: str) -> Hierarchy | None:
    base = mount / own.lstrip("/") / name
    try:
        _clear_leftovers(base, 1)
        base.mkdir()
    except OSError as exc:
        log.debug("cgroup v1 %s at %s not usable: %s", controller, base.parent, exc)
        return None
    return Hierarchy(1, base, frozenset({controller}))


def _clear_leftovers(base: Path, version: int) -> None:
    """Kill what a previous life of this worker left in its groups, then remove them."""
    if not base.exists():
        return
    slots = [p for p in base.iterdir() if p.is_dir()]
    killed = 0
    for group in [*slots, base]:
        killed += kill_group(group, version)
    for group in [*slots, base]:
        wait_empty(group, version)
        try:
            group.rmdir()
        except OSError as exc:
            raise OSError(exc.errno, f"cannot remove the leftover cgroup {group}: {exc.strerror}") from None
    if killed:
        log.warning("killed %d leftover processes of this worker's previous run (cgroup %s)", killed, base)


def procs(group: Path) -> list[int]:
    return [int(p) for p in _read(group / "cgroup.procs").split()]


def kill_group(group: Path, version: int) -> int:
    """SIGKILL every process in ``group`` (and, for v2, its children); how many were listed."""
    listed = len(procs(group))
    if version == 2 and (group / "cgroup.kill").exists():
        try:
            (group / "cgroup.kill").write_text("1")
            return listed
        except OSError:
            pass
    for _ in range(100):  # v1: kill what is listed until nothing is (a forking action races us)
        pids = procs(group)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.001)
    return listed


def wait_empty(group: Path, version: int, timeout: float = EMPTY_WAIT_S) -> bool:
    """Whether ``group`` became empty (killed processes take a moment to go)."""
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        if version == 2 and (group / "cgroup.events").exists():
            empty = _counter(group / "cgroup.events", "populated") == 0
        else:
            empty = not procs(group)
        if empty or time.monotonic() > deadline:
            return empty
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


@dataclass
class SlotCounters:
    oom_kills: int = 0
    pids_refused: int = 0


@dataclass
class CgroupSlot:
    """The groups (one per hierarchy) that one running action lives in."""

    index: int
    kill_in: tuple[Path, int] | None  # the group whose kill reaches every process, and its version
    memory: tuple[Path, int] | None
    pids: tuple[Path, int] | None
    groups: list[Path] = field(default_factory=list)
    _memory_limit: int | None = None
    _pids_limit: int | None = None

    def join(self, pid: int) -> None:
        """Move ``pid`` into every group of this slot (its children will be born there)."""
        for group in self.groups:
            (group / "cgroup.procs").write_text(str(pid))

    def join_self_in_child(self) -> None:
        """For a freshly forked child: move itself (no Python objects allocated on failure)."""
        for group in self.groups:
            fd = os.open(group / "cgroup.procs", os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)

    def set_limits(self, memory: int | None, pids: int | None) -> None:
        if self.memory is not None and memory != self._memory_limit:
            group, version = self.memory
            if version == 2:
                (group / "memory.max").write_text(str(memory) if memory else "max")
                if (group / "memory.swap.max").exists():
                    (group / "memory.swap.max").write_text("0" if memory else "max")
            else:
                (group / "memory.limit_in_bytes").write_text(str(memory) if memory else "-1")
            self._memory_limit = memory
        if self.pids is not None and pids != self._pids_limit:
            group, _ = self.pids
            (group / "pids.max").write_text(str(pids) if pids else "max")
            self._pids_limit = pids

    def counters(self) -> SlotCounters:
        counters = SlotCounters()
        if self.memory is not None:
            group, version = self.memory
            name = "memory.events" if version == 2 else "memory.oom_control"
            counters.oom_kills = _counter(group / name, "oom_kill")
        if self.pids is not None:
            counters.pids_refused = _counter(self.pids[0] / "pids.events", "max")
        return counters

    def kill_now(self) -> None:
        """SIGKILL every process of the action, without waiting for them to go."""
        if self.kill_in is not None:
            kill_group(*self.kill_in)

    def kill_all(self) -> None:
        """SIGKILL every process of the action and wait until they are gone (blocking)."""
        if self.kill_in is None:
            return
        group, version = self.kill_in
        kill_group(group, version)
        if not wait_empty(group, version):
            log.error("processes in %s survived SIGKILL: %s", group, procs(group))

    def members(self) -> list[int]:
        return procs(self.kill_in[0]) if self.kill_in is not None else []


class Cgroups:
    """This worker's groups in every usable hierarchy, and its pool of slots."""

    def __init__(self, hierarchies: list[Hierarchy], slots: int) -> None:
        self.hierarchies = hierarchies
        v2 = next((h for h in hierarchies if h.version == 2), None)
        v1 = [h for h in hierarchies if h.version == 1]

        def pick(controller: str) -> Hierarchy | None:
            if v2 is not None and controller in v2.controllers:
                return v2
            return next((h for h in v1 if controller in h.controllers), None)

        self._memory, self._pids = pick("memory"), pick("pids")
        self._kill = v2 or self._pids or self._memory
        self.slots: list[CgroupSlot] = []
        for index in range(slots):
            used = {h.base: h for h in (self._kill, self._memory, self._pids) if h is not None}
            for hierarchy in used.values():
                hierarchy.slot(index).mkdir(exist_ok=True)

            def where(h: Hierarchy | None) -> tuple[Path, int] | None:
                return (h.slot(index), h.version) if h is not None else None

            self.slots.append(CgroupSlot(index, where(self._kill), where(self._memory), where(self._pids),
                                         [h.slot(index) for h in used.values()]))

    @property
    def can_kill(self) -> bool:
        return self._kill is not None

    @property
    def limits_memory(self) -> bool:
        return self._memory is not None

    @property
    def limits_pids(self) -> bool:
        return self._pids is not None

    def describe(self) -> str:
        if not self.hierarchies:
            return "no cgroup (none delegated to this worker)"
        parts = []
        for what, h in (("kill", self._kill), ("memory", self._memory), ("pids", self._pids)):
            parts.append(f"{what}: v{h.version}" if h is not None else f"{what}: none")
        return "cgroups " + ", ".join(parts)

    def remove(self) -> None:
        """At shutdown: remove our (empty) groups."""
        for hierarchy in self.hierarchies:
            for group in [*[p for p in hierarchy.base.iterdir() if p.is_dir()], hierarchy.base]:
                try:
                    group.rmdir()
                except OSError as exc:
                    log.warning("cannot remove cgroup %s: %s", group, exc)


def remove_leftover_groups(work_dir: Path) -> None:
    """Kill and remove whatever groups a previous life of this worker left, in every
    hierarchy (blocking; at start, whatever this run will use)."""
    name = group_name(work_dir)
    own, mounts = _own_cgroups(), _mounts()
    for controller, mount in mounts.items():
        if controller in own and (controller == "" or controller in ("memory", "pids")):
            try:
                _clear_leftovers(mount / own[controller].lstrip("/") / name, 2 if controller == "" else 1)
            except OSError as exc:
                log.error("%s", exc)


def open_cgroups(work_dir: Path, slots: int, wanted: set[str]) -> Cgroups:
    """This worker's groups wherever it may create them (blocking; at start).

    ``wanted``: the controllers limits need ("memory", "pids"); the kill needs none."""
    name = group_name(work_dir)
    own, mounts = _own_cgroups(), _mounts()
    hierarchies: list[Hierarchy] = []
    if "" in mounts and "" in own:
        v2 = _make_v2(mounts[""], own[""], name, wanted)
        if v2 is not None:
            hierarchies.append(v2)
    have = set(hierarchies[0].controllers) if hierarchies else set()
    for controller in ("pids", "memory"):
        need = controller in wanted and controller not in have
        # Without a v2 group, a v1 one is also what kills everything (pids preferred).
        need = need or (not hierarchies and controller == "pids")
        if need and controller in mounts and controller in own:
            v1 = _make_v1(mounts[controller], own[controller], name, controller)
            if v1 is not None:
                hierarchies.append(v1)
    return Cgroups(hierarchies, slots)
