"""Snapshots of Bazel's output tree, to compare two builds byte for byte.

A snapshot maps each path under bazel-bin to what is there: the SHA-256 and
executable bit of a file, the target of a relative symlink, or the fact that an
empty directory exists. Tree artifacts (output directories) are walked like any
directory, so their files, nesting and symlinks are all compared.

Left out on purpose: runfiles trees (``*.runfiles``, built locally by internal
actions) and symlinks with absolute targets (Bazel points them into the
workspace or the output base, so they name paths, not contents).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class OutputSnapshot:
    root: Path
    entries: dict[str, str]  # relative path -> "file <sha256> [x]" | "link -> target" | "dir"

    def files(self) -> set[str]:
        return {p for p, what in self.entries.items() if what.startswith("file ")}

    def diff(self, other: OutputSnapshot) -> list[str]:
        """Human-readable differences, empty when both trees hold the same bytes."""
        lines = []
        for path in sorted(self.entries.keys() | other.entries.keys()):
            mine, theirs = self.entries.get(path, "(absent)"), other.entries.get(path, "(absent)")
            if mine != theirs:
                lines.append(f"{path}: {mine}  !=  {theirs}")
        return lines

    def __contains__(self, relpath: str) -> bool:
        return relpath in self.entries

    def __len__(self) -> int:
        return len(self.entries)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def snapshot_tree(root: Path, subdirs: Iterable[str] = ()) -> OutputSnapshot:
    """Snapshot ``root`` (bazel-bin; a symlink is fine) or only ``subdirs`` of it."""
    real_root = root.resolve()
    entries: dict[str, str] = {}
    starts = [real_root / s for s in subdirs] or [real_root]
    for start in starts:
        if not start.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(start):
            here = Path(dirpath)
            dirnames[:] = sorted(d for d in dirnames if not d.endswith(".runfiles"))
            names = sorted(filenames) + [d for d in dirnames if (here / d).is_symlink()]
            if not names and not dirnames:
                entries[str(here.relative_to(real_root))] = "dir"
            for name in names:
                path = here / name
                rel = str(path.relative_to(real_root))
                if path.is_symlink():
                    target = os.readlink(path)
                    if not os.path.isabs(target):
                        entries[rel] = f"link -> {target}"
                elif path.is_file():
                    executable = " x" if os.access(path, os.X_OK) else ""
                    entries[rel] = f"file {_sha256(path)}{executable}"
    return OutputSnapshot(real_root, entries)
