"""Helpers for the DiskStore tests: blobs, file listings, simulated crashes and reboots."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from cas.digest import Digest
from cas.disk.store import DiskStore
from cas.disk.layout import TEMP_PREFIX
from cas.disk.snapshot import SNAPSHOT_FILE

MiB = 1 << 20


class Clock:
    """Wall time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def blob(seed: int, size: int) -> tuple[Digest, bytes]:
    data = (seed.to_bytes(4, "big") * (size // 4 + 1))[:size]
    return Digest.of(data), data


def shard_files(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*/??/*") if p.is_file())


def value_files(root: Path) -> list[Path]:
    return [p for p in shard_files(root) if not p.name.startswith(TEMP_PREFIX)]


def temp_files(root: Path) -> list[Path]:
    return [p for p in shard_files(root) if p.name.startswith(TEMP_PREFIX)]


def as_if_crashed(root: Path) -> None:
    """Make a cleanly closed store look like its process died: no index snapshot."""
    (root / SNAPSHOT_FILE).unlink()


def as_if_rebooted(root: Path) -> None:
    """Make the snapshot look like it was written before a reboot."""
    path = root / SNAPSHOT_FILE
    document = json.loads(path.read_text())
    document["boot_id"] = "another boot"
    path.write_text(json.dumps(document))


RESTARTS = {"crash": as_if_crashed, "reboot": as_if_rebooted, "clean": lambda root: None}


async def open_store(root: Path, max_bytes: int = 64 * MiB, **options: Any) -> DiskStore:
    return await DiskStore.open(root, max_bytes=max_bytes, name="test", **options)


def assert_index_matches_files(store: DiskStore, root: Path) -> None:
    """Every indexed value has its file, every file is indexed, and the byte count agrees."""
    on_disk = {str(p): p.stat().st_size for p in value_files(root)}
    indexed = {store.path_of(d): e.length for d, e in store._index.entries()}
    assert indexed == on_disk
    assert store.total_bytes == sum(on_disk.values()) <= store.max_bytes
