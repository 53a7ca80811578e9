"""A snapshot of a DiskStore's index, written at a clean close, to reopen without a full scan.

The full scan (scan.py) stats every file, to drop values a crash truncated
and to recover the LRU order from mtimes; in Python that costs several
microseconds per value. After a clean close *on the same boot* no value can be
truncated: every write had finished, and the kernel still holds the data. So
``aclose`` writes the index, in LRU order, to ``root/.reapi-index``, stamped with the
kernel's boot id, and the next ``open``:
- takes the snapshot (reads it, then deletes it, so a crash of this run forces a
  full scan next time);
- trusts it only if the boot id matches (a reboot, perhaps after a power cut,
  means a full scan);
- lists the shard directories (no stat) and keeps only snapshot entries whose
  file exists; files missing from the snapshot are stat-checked and put at the
  old end, temp files removed.
The order is then exact, not just as fresh as the last lazy mtime refresh.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from cas.digest import ALGORITHMS, Digest
from cas.disk.layout import TEMP_PREFIX, gc_paused, parse_name, shard_dirs, unlink_quietly, value_path
from cas.disk.scan import ScanReport

SNAPSHOT_FILE = ".reapi-index"  # dotted and prefixed: never a user's own file
_FORMAT = "reapi disk index 1"
_BOOT_ID = "/proc/sys/kernel/random/boot_id"

E = TypeVar("E")


def current_boot_id() -> str:
    """The kernel's id for this boot; empty where there is none (then snapshots are never trusted)."""
    try:
        with open(_BOOT_ID) as f:
            return f.read().strip()
    except OSError:
        return ""


def write_snapshot(root: str, entries: Iterable[tuple[Digest, int, float]], boot_id: str) -> None:
    """Write (digest, length, stamp) entries, oldest first, atomically. Runs in a thread."""
    hashes, sizes, functions, lengths, stamps = [], [], [], [], []
    for digest, length, stamp in entries:
        hashes.append(digest.hash)
        sizes.append(digest.size_bytes)
        functions.append(digest.function)
        lengths.append(length)
        stamps.append(int(stamp))  # the order is the list's; stamps only pace mtime refreshes
    document = {
        "format": _FORMAT, "boot_id": boot_id,
        "hash": hashes, "size": sizes, "function": functions, "length": lengths, "stamp": stamps,
    }
    path = os.path.join(root, SNAPSHOT_FILE)
    temp = f"{path}{TEMP_PREFIX}"
    with open(temp, "w") as f:
        f.write(json.dumps(document, separators=(",", ":")))  # dumps: the C encoder, unlike dump
    os.rename(temp, path)


def take_snapshot(root: str, boot_id: str) -> dict[str, Any] | None:
    """Read and delete the snapshot; None unless it is whole and from this boot."""
    path = os.path.join(root, SNAPSHOT_FILE)
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    os.unlink(path)  # from now on, only a clean close may leave one
    try:
        document = json.loads(text)
    except ValueError:
        return None
    if not isinstance(document, dict) or document.get("format") != _FORMAT:
        return None
    if not boot_id or document.get("boot_id") != boot_id:
        return None
    columns = {k: document.get(k) for k in ("hash", "size", "function", "length", "stamp")}
    count = len(document["hash"]) if isinstance(document.get("hash"), list) else -1
    if not all(isinstance(c, list) and len(c) == count for c in columns.values()):
        return None
    kinds = {k: set(map(type, c)) for k, c in columns.items() if isinstance(c, list)}
    ints = {int}
    if count and not (kinds["hash"] == {str} and kinds["size"] == kinds["function"] == kinds["length"] == ints
                      and kinds["stamp"] <= {int, float}):
        return None
    return document


def index_from_snapshot(
    root: str, document: dict[str, Any], make_entry: Callable[[int, float], E]
) -> tuple[OrderedDict[Digest, E], ScanReport]:
    """The index a snapshot describes, checked against a listing of the shards."""
    with gc_paused():
        return _index_from_snapshot(root, document, make_entry)


def _index_from_snapshot(
    root: str, document: dict[str, Any], make_entry: Callable[[int, float], E]
) -> tuple[OrderedDict[Digest, E], ScanReport]:
    report = ScanReport()
    on_disk: dict[int, set[str]] = {f: set() for f in ALGORITHMS}
    for function, shard in shard_dirs(root):
        names = on_disk[function]
        for name in os.listdir(shard):
            if name.startswith(TEMP_PREFIX):
                unlink_quietly(os.path.join(shard, name))
                report.temp_files_removed += 1
            else:
                names.add(name)
    index: OrderedDict[Digest, E] = OrderedDict()
    for hash_hex, size, function, length, stamp in zip(
        document["hash"], document["size"], document["function"], document["length"], document["stamp"]
    ):
        listed = on_disk.get(function)
        name = f"{hash_hex}-{size}" if length == size else f"{hash_hex}-{size}-{length}"
        if listed is not None and name in listed:
            listed.discard(name)
            index[Digest(hash_hex, size, function)] = make_entry(length, stamp)
    _adopt_unlisted(root, on_disk, index, make_entry, report)
    report.values = len(index)
    return index, report


def _adopt_unlisted(
    root: str, on_disk: dict[int, set[str]], index: OrderedDict[Digest, E],
    make_entry: Callable[[int, float], E], report: ScanReport,
) -> None:
    """Files the snapshot does not know (put there while the store was closed):
    checked like the full scan does, and placed at the old end of the LRU order."""
    found = []
    for function, names in on_disk.items():
        for name in names:
            named = parse_name(function, name)
            if named is None:
                continue  # not ours: leave it alone
            digest, length = named
            path = value_path(root, digest, length)
            if digest in index:  # the same key under another length: the snapshot's wins
                unlink_quietly(path)
                report.superseded_removed.append(path)
                continue
            try:
                st = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if st.st_size != length:
                unlink_quietly(path)
                report.truncated_removed.append(path)
                continue
            found.append((st.st_mtime_ns, digest, length))
    for mtime_ns, digest, length in sorted(found, key=lambda f: f[0], reverse=True):
        index[digest] = make_entry(length, mtime_ns / 1e9)
        index.move_to_end(digest, last=False)

