"""Build test archives in memory: tar (plain, gz, bz2, xz) and zip, with modes and links."""

from __future__ import annotations

import io
import stat
import tarfile
import time
import zipfile
from typing import Any, cast
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    name: str
    data: bytes = b""
    mode: int = 0o644
    kind: str = "file"  # file | dir | symlink | hardlink
    target: str = ""


def tar_bytes(entries: list[Entry], compression: str = "") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=cast(Any, f"w:{compression}")) as archive:  # a Literal for mypy
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.mtime = int(time.time())
            info.mode = e.mode
            if e.kind == "dir":
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            elif e.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, e.target
                archive.addfile(info)
            elif e.kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, e.target
                archive.addfile(info)
            else:
                info.size = len(e.data)
                archive.addfile(info, io.BytesIO(e.data))
    return buffer.getvalue()


def zip_bytes(entries: list[Entry]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for e in entries:
            info = zipfile.ZipInfo(e.name + ("/" if e.kind == "dir" and not e.name.endswith("/") else ""))
            info.create_system = 3
            if e.kind == "symlink":
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                archive.writestr(info, e.target)
            elif e.kind == "dir":
                info.external_attr = (stat.S_IFDIR | 0o755) << 16
                archive.writestr(info, b"")
            else:
                info.external_attr = (stat.S_IFREG | e.mode) << 16
                archive.writestr(info, e.data)
    return buffer.getvalue()


def archive_bytes(fmt: str, entries: list[Entry]) -> bytes:
    """``fmt``: tar, tar.gz, tar.bz2, tar.xz or zip."""
    if fmt == "zip":
        return zip_bytes(entries)
    return tar_bytes(entries, {"tar": "", "tar.gz": "gz", "tar.bz2": "bz2", "tar.xz": "xz"}[fmt])
