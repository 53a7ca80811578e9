"""What the worker tells the server it holds and how busy it is (docs/BOTS_PROTOCOL.md section 8).

The server places an action on the bot that holds most of its inputs when it can
(``[execution] dispatch = "locality"``), so the worker sends, when the server agreed:

- a DigestFilter (cas/digest_filter.py) of its most recently used cache files, at
  most ``max_bytes``, whatever the cache's size. Files are added as they enter the
  cache; after ``capacity / 2`` changes (entries added or evicted) the filter is made
  again from the newest ``capacity / 2`` entries, so evicted files leave it and it
  never holds more than it was sized for. Both happen when it is next sent, not as
  files enter (that is an action's input fetch: a rebuild hashes thousands of names).
  It goes out only when it changed since the last answered call;
- its load: CPU and memory pressure over the last 10 seconds from the kernel's
  pressure stall information (``/proc/pressure``), or where there is none, the load
  average per CPU and the share of memory in use.
"""

from __future__ import annotations

import os
from pathlib import Path

from cas.digest import Digest
from cas.digest_filter import HEADER, DigestFilter
from worker.file_cache import FileCache

BITS_PER_ENTRY = 8  # with 5 probes, about 2% false positives when full


class CacheSummary:
    """The filter of ``files``' newest entries, kept up to date as the cache changes."""

    def __init__(self, files: FileCache, max_bytes: int) -> None:
        self.files = files
        self.max_bytes = max_bytes
        self.capacity = max(8, (max_bytes - HEADER) * 8 // BITS_PER_ENTRY)
        self.version = 0  # changes whenever the filter does
        self._filter = DigestFilter.sized_for(self.capacity, max_bytes)
        self._changes = 0
        self._pending: list[str] = []  # hashes of files added since the filter was last sent
        self._stale = False  # made again from the newest entries before it is next sent
        self._rebuild()
        self.version += 1
        files.watcher = self._changed

    def _changed(self, digest: Digest, added: bool) -> None:
        """Called per cache file added or evicted, on the input fetch's path: the filter
        takes new files (or is made again) when it is next sent (``wire``), not here."""
        self._changes += 1
        if added:
            self.version += 1
            if not self._stale:
                self._pending.append(digest.hash)
        if self._changes >= self.capacity // 2 and not self._stale:
            self._stale = True
            self._pending = []  # the rebuild takes the newest entries, these among them
            self.version += 1

    def _rebuild(self) -> None:
        fresh = DigestFilter(self._filter.bits, self._filter.probes)
        fresh.add_all(digest.hash for digest, _ in self.files.newest(self.capacity // 2))
        self._filter = fresh
        self._pending = []
        self._changes = 0
        self._stale = False

    def wire(self) -> bytes:
        if self._stale:
            self._rebuild()
        if self._pending:
            self._filter.add_all(self._pending)
            self._pending = []
        return self._filter.to_bytes()


def _pressure(path: str) -> float | None:
    """The ``some avg10`` share of a /proc/pressure file, 0 to 1; None where there is none."""
    try:
        first = Path(path).read_text().split("\n", 1)[0]
    except OSError:
        return None
    for part in first.split():
        if part.startswith("avg10="):
            return min(1.0, float(part[6:]) / 100)
    return None


def current_load() -> tuple[float, float]:
    """(CPU, memory) pressure, 0 to 1."""
    cpu = _pressure("/proc/pressure/cpu")
    if cpu is None:
        cpu = min(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
    memory = _pressure("/proc/pressure/memory")
    if memory is None:
        memory = 0.0
        try:
            fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
            total = int(fields["MemTotal"].split()[0])
            available = int(fields["MemAvailable"].split()[0])
            memory = max(0.0, 1 - available / total)
        except (OSError, KeyError, ValueError, ZeroDivisionError):
            pass
    return cpu, memory


def load_text() -> str:
    cpu, memory = current_load()
    return f"cpu={cpu:.3f} memory={memory:.3f}"
