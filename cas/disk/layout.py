"""Where a DiskStore keeps each value, and how it finds them all again at open.

    root/
      .reapi-disk-store                    marker holding the layout version
      .lock                                flock held by the one process using the store
      .reapi-index                         LRU snapshot written at a clean close (snapshot.py)
      sha256/ab/<hash>-<size>              a value as long as its digest says (every CAS blob)
      sha256/ab/<hash>-<size>-<length>     a value of another length (action cache entries)
      sha256/ab/.tmp-<n>                   a value being written; after a crash, a leftover

The value's expected length is part of its file name. That is what keeps a
truncated file from ever being served: a crash can persist a rename before the
data (ext4 and XFS with delayed allocation leave such files short or empty), and a
file whose size differs from the length in its name is dropped at open and at read.

Temp files live in the shard directory their value will be renamed into: a rename
within one directory avoids the file-system-wide lock Linux takes for renames
between directories, so parallel writers scale. Shards are the first two hex digits
of the hash: 256 directories per function keep directories small up to millions of
values.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager

from cas.digest import ALGORITHMS, Digest
from cas.localfs.directory_lock import LOCK_FILE  # noqa: F401 - part of the layout described above

LAYOUT_MARKER = ".reapi-disk-store"
LAYOUT_VERSION = "reapi disk store layout 1\n"
TEMP_PREFIX = ".tmp-"
_HEX = "0123456789abcdef"

_DIR_OF_FUNCTION = {f: a.name for f, a in ALGORITHMS.items()}
FUNCTION_OF_DIR = {a.name: f for f, a in ALGORITHMS.items()}
_HEX_LENGTH = {f: a.hex_length for f, a in ALGORITHMS.items()}

# One value file: (digest, length). Parsed from a file name alone.
Named = tuple[Digest, int]


def value_path(root: str, digest: Digest, length: int) -> str:
    """The absolute path of a value (strings, not Path objects: this is a hot path).
    The length is spelled out in the name only when it differs from the digest's size."""
    h = digest.hash
    if length == digest.size_bytes:
        return f"{root}/{_DIR_OF_FUNCTION[digest.function]}/{h[:2]}/{h}-{length}"
    return f"{root}/{_DIR_OF_FUNCTION[digest.function]}/{h[:2]}/{h}-{digest.size_bytes}-{length}"


def temp_path(root: str, digest: Digest, serial: int) -> str:
    """A fresh temp file name next to where ``digest``'s value will go."""
    return f"{root}/{_DIR_OF_FUNCTION[digest.function]}/{digest.hash[:2]}/{TEMP_PREFIX}{serial}"


def parse_name(function: int, name: str) -> Named | None:
    """The digest and length a value file name stands for, or None if it is not one."""
    hash_hex, _, rest = name.partition("-")
    if len(hash_hex) != _HEX_LENGTH[function] or hash_hex.strip(_HEX):
        return None
    size_text, _, length_text = rest.partition("-")
    if not (size_text.isascii() and size_text.isdigit() and (not length_text or length_text.isdigit())):
        return None
    size = int(size_text)
    length = int(length_text) if length_text else size
    # Only the canonical spelling (no leading zeros, length only when it differs)
    # is ours, so value_path() of the result is exactly this file.
    canonical = f"{size}-{length}" if length != size else str(size)
    if rest != canonical:
        return None
    return Digest(hash_hex, size, function), length


def shard_dirs(root: str) -> Iterator[tuple[int, str]]:
    """(digest function, path) of every shard directory."""
    with os.scandir(root) as tops:
        for top in tops:
            function = FUNCTION_OF_DIR.get(top.name)
            if function is None or not top.is_dir(follow_symlinks=False):
                continue
            with os.scandir(top.path) as shards:
                for shard in shards:
                    if len(shard.name) == 2 and shard.is_dir(follow_symlinks=False):
                        yield function, shard.path


def unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building an index of many small
    objects: it would otherwise rescan them all again and again (twice as slow)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
