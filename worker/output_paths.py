"""Declared outputs: which paths an action may produce, checked before it runs.

A Command names outputs relative to its working directory, either as
``output_paths`` (REv2 >= 2.1, type decided after the run) or as the older
``output_files`` / ``output_directories``. A path in both of those (Buck2's
compatibility mode for outputs of either type) is one output whose type is decided
after the run, as with ``output_paths``. Each is normalised to a path under the
exec root here; one that would leave it (absolute, or climbing out with ``..``) is
INVALID_ARGUMENT before anything runs. The parents of every output (not the output
directories themselves: the action makes those) are created before the run, as
REv2 asks, without following symlinks, so an input symlink can never make the
worker create a directory outside the exec root.
"""

from __future__ import annotations

import os
import posixpath
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cas.errors import InvalidArgument
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2

OutputKind = Literal["file", "directory", "any"]


@dataclass(frozen=True)
class DeclaredOutput:
    path: str  # as the Command names it: what the ActionResult reports
    exec_path: str  # normalised, relative to the exec root
    kind: OutputKind


def inside_path(path: str, what: str) -> str:
    """``path`` normalised; INVALID_ARGUMENT if it is absolute or climbs out of its base."""
    if path.startswith("/"):
        raise InvalidArgument(f"{what} {path!r} is absolute; it must be relative to the exec root")
    if "\0" in path:
        raise InvalidArgument(f"{what} {path!r} contains a NUL character")
    normal = posixpath.normpath(path) if path else "."
    if normal == ".." or normal.startswith("../"):
        raise InvalidArgument(f"{what} {path!r} points outside the exec root")
    return normal


def working_directory(command: re_pb2.Command) -> str:
    """The working directory relative to the exec root ("" for the root itself)."""
    normal = inside_path(command.working_directory, "working_directory")
    return "" if normal == "." else normal


def declared_outputs(command: re_pb2.Command) -> list[DeclaredOutput]:
    """The Command's outputs, each checked to stay inside the exec root."""
    base = working_directory(command)
    if command.output_paths:
        named: list[tuple[str, OutputKind]] = [(p, "any") for p in command.output_paths]
    else:
        either = set(command.output_files) & set(command.output_directories)
        named = [(p, "any" if p in either else "file") for p in command.output_files]
        named += [(p, "directory") for p in command.output_directories if p not in either]
    out = []
    for path, kind in named:
        if path.endswith("/") and path != "/":
            raise InvalidArgument(f"output path {path!r} has a trailing slash")
        exec_path = inside_path(posixpath.join(base, path) if base else path, "output path")
        if exec_path == "." and kind != "directory":
            raise InvalidArgument(f"output path {path!r} names the exec root itself")
        out.append(DeclaredOutput(path, exec_path, kind))
    return out


def create_output_parents(exec_root: Path, outputs: list[DeclaredOutput], workdir: str,
                          owner: tuple[int, int] | None = None) -> None:
    """mkdir -p the working directory and each output's parent, refusing to pass through
    symlinks (blocking); new directories belong to ``owner`` when given (the action user)."""
    made: set[str] = set()
    wanted = [workdir] if workdir else []
    wanted += [posixpath.dirname(o.exec_path) for o in outputs]
    for relative in wanted:
        if not relative or relative == "." or relative in made:
            continue
        current = ""
        for part in relative.split("/"):
            current = f"{current}/{part}" if current else part
            if current in made:
                continue
            full = os.path.join(exec_root, current)
            try:
                os.mkdir(full)
                if owner is not None:
                    os.chown(full, *owner)
            except FileExistsError:
                mode = os.lstat(full).st_mode
                if stat.S_ISLNK(mode):
                    raise InvalidArgument(
                        f"output directory {relative!r} would pass through the input symlink {current!r}"
                    ) from None
                if not stat.S_ISDIR(mode):
                    raise InvalidArgument(f"output directory {relative!r} would pass through the input file {current!r}") from None
            made.add(current)


def resolves_inside(exec_root: Path, exec_path: str) -> bool:
    """Whether the parent of ``exec_path`` really lies inside the exec root now (after the run)."""
    root = os.path.realpath(exec_root)
    parent = os.path.realpath(os.path.join(root, posixpath.dirname(exec_path)))
    return parent == root or parent.startswith(root + os.sep)
