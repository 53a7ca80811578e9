"""Bazel's process summary line, parsed: how each action (spawn) was run.

Bazel 4.2.3 ends a build with one line such as::

    INFO: 38 processes: 13 internal, 25 linux-sandbox.
    INFO: 38 processes: 25 remote cache hit, 13 internal.
    INFO: 1 process: 1 internal.
    INFO: 0 processes.

"internal" spawns never reach a remote cache (symlink trees, file writes); every
other kind is a real action. Bazel 4 also counts a --disk_cache hit as "remote cache
hit", which is why tests/support/bazel.py always turns the disk cache off.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE = re.compile(r"^INFO: (\d+) process(?:es)?(?:: (.*?))?\.\s*$", re.MULTILINE)
_PART = re.compile(r"^(\d+) (\S.*)$")

INTERNAL = "internal"
REMOTE_CACHE_HIT = "remote cache hit"
REMOTE = "remote"  # executed remotely


@dataclass(frozen=True)
class ProcessSummary:
    total: int
    by_kind: dict[str, int]
    line: str

    @classmethod
    def parse(cls, output: str) -> ProcessSummary:
        """The last summary line in ``output``; ValueError if there is none or it does not add up."""
        matches = list(_LINE.finditer(output))
        if not matches:
            raise ValueError("no 'INFO: N processes: ...' summary line in Bazel's output")
        match = matches[-1]
        total = int(match.group(1))
        by_kind: dict[str, int] = {}
        for part in filter(None, (p.strip() for p in (match.group(2) or "").split(","))):
            kind = _PART.match(part)
            if kind is None:
                raise ValueError(f"cannot read {part!r} in Bazel's summary line {match.group(0)!r}")
            by_kind[kind.group(2)] = by_kind.get(kind.group(2), 0) + int(kind.group(1))
        if sum(by_kind.values()) != total:
            raise ValueError(f"the parts of {match.group(0)!r} do not add up to {total}")
        return cls(total, by_kind, match.group(0).strip())

    def count(self, kind: str) -> int:
        return self.by_kind.get(kind, 0)

    @property
    def actions(self) -> int:
        """Spawns that are real actions, i.e. all but the internal ones."""
        return self.total - self.count(INTERNAL)

    @property
    def not_cache_hits(self) -> dict[str, int]:
        """Real actions that were not served by the remote cache, by how they ran."""
        return {k: n for k, n in self.by_kind.items() if k not in (INTERNAL, REMOTE_CACHE_HIT)}

    @property
    def all_remote_cache_hits(self) -> bool:
        """True when there were real actions and every one was a remote cache hit."""
        return self.actions > 0 and not self.not_cache_hits

    def __str__(self) -> str:
        return self.line
