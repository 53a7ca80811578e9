"""What a crashed worker left running, found again by the next start (no-cgroup fallback).

With a cgroup, a restarted worker kills whatever is in its groups (worker/sandbox/cgroups.py);
with bwrap the kernel already killed the sandboxes (``--die-with-parent``). The process
fallback without a cgroup has only process groups: each running action's group id is a
file under ``<work_dir>/.groups`` (with the user it runs as), removed when the action ends.
A starting worker kills every process still in a recorded group and owned by that user
(a group id a stranger has since taken is left alone), then the work directory is emptied.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

from worker.sandbox.processes import stat_fields

log = logging.getLogger("reapi.worker.sandbox")


class GroupRecords:
    """The process groups of running actions, on disk (``None`` directory: memory only)."""

    def __init__(self, work_dir: Path | None, uid: int) -> None:
        self.dir = work_dir / ".groups" if work_dir is not None else None
        self.uid = uid
        self.running: set[int] = set()
        if self.dir is not None:
            self.dir.mkdir(exist_ok=True)

    def add(self, pgid: int) -> None:
        self.running.add(pgid)
        if self.dir is not None:
            (self.dir / str(pgid)).write_text(str(self.uid))

    def remove(self, pgid: int) -> None:
        self.running.discard(pgid)
        if self.dir is not None:
            (self.dir / str(pgid)).unlink(missing_ok=True)


def kill_recorded_groups(work_dir: Path) -> int:
    """Kill what the previous run's recorded groups still hold (blocking; at start)."""
    records = work_dir / ".groups"
    if not records.is_dir():
        return 0
    wanted: dict[int, int] = {}
    for record in records.iterdir():
        try:
            wanted[int(record.name)] = int(record.read_text())
        except (OSError, ValueError):
            continue
    killed = 0
    for name in os.listdir("/proc") if wanted else []:
        if not name.isdigit():
            continue
        fields = stat_fields(int(name))
        if fields is None or int(fields[2]) not in wanted:
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != wanted[int(fields[2])]:
                continue
            os.kill(int(name), signal.SIGKILL)
            killed += 1
        except OSError:
            continue
    if killed:
        log.warning("killed %d leftover processes of this worker's previous run", killed)
    return killed
