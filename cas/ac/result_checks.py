"""Validation of an ActionResult before it enters the action cache.

A bad result in the cache is worse than none: every client that hits it gets the
same broken outputs. So UpdateActionResult (and the execution service, for results
its workers report) refuse results whose digests are malformed, whose output paths
are absolute, unnormalised or duplicated, or whose output directories point
nowhere. Each problem is INVALID_ARGUMENT naming the field.
"""

from __future__ import annotations

from collections.abc import Iterable

from cas.digest import Digest
from cas.errors import InvalidArgument, invalid_field
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2


def check_output_path(path: str, field: str, allow_empty: bool = False) -> None:
    """Relative, '/'-separated, normalised: no leading or trailing '/', '.', '..' or empty segments."""
    if not path:
        if allow_empty:
            return
        raise invalid_field(field, "the path is empty")
    if path.startswith("/"):
        raise invalid_field(field, f"path {path!r} is absolute; output paths are relative to the working directory")
    if "\0" in path:
        raise invalid_field(field, f"path {path!r} contains a NUL character")
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise invalid_field(field, f"path {path!r} is not normalised (it has a {segment or 'empty'!r} segment)")


def _check_digest(proto: re_pb2.Digest, function: int, field: str) -> None:
    try:
        Digest.from_proto(proto, function)
    except InvalidArgument as err:
        raise invalid_field(field, err.message) from None


def _check_unique(paths: Iterable[tuple[str, str]]) -> None:
    seen: dict[str, str] = {}
    for path, field in paths:
        if path in seen:
            raise invalid_field(field, f"path {path!r} is already used by {seen[path]}")
        seen[path] = field


def check_action_result(result: re_pb2.ActionResult, function: int) -> None:
    """Raise INVALID_ARGUMENT (naming the field) unless ``result`` is fit to cache."""
    paths: list[tuple[str, str]] = []
    for i, output in enumerate(result.output_files):
        field = f"action_result.output_files[{i}]"
        check_output_path(output.path, f"{field}.path")
        _check_digest(output.digest, function, f"{field}.digest")
        paths.append((output.path, field))
    for i, directory in enumerate(result.output_directories):
        field = f"action_result.output_directories[{i}]"
        check_output_path(directory.path, f"{field}.path", allow_empty=True)
        has_tree = directory.HasField("tree_digest")
        has_root = directory.HasField("root_directory_digest")
        if not has_tree and not has_root:
            raise invalid_field(field, f"output directory {directory.path!r} has neither tree_digest nor root_directory_digest")
        if has_tree:
            _check_digest(directory.tree_digest, function, f"{field}.tree_digest")
        if has_root:
            _check_digest(directory.root_directory_digest, function, f"{field}.root_directory_digest")
        paths.append((directory.path, field))
    # REv2 2.1+ asks servers to fill both output_symlinks and the legacy per-kind
    # lists, so the same symlink may appear twice; only a different target clashes.
    links: dict[str, tuple[str, str]] = {}
    for kind in ("output_file_symlinks", "output_directory_symlinks", "output_symlinks"):
        for i, link in enumerate(getattr(result, kind)):
            field = f"action_result.{kind}[{i}]"
            check_output_path(link.path, f"{field}.path")
            if not link.target:
                raise invalid_field(f"{field}.target", f"symlink {link.path!r} has an empty target")
            earlier = links.get(link.path)
            if earlier is None:
                links[link.path] = (link.target, field)
                paths.append((link.path, field))
            elif earlier[0] != link.target:
                raise invalid_field(field, f"symlink {link.path!r} points to {link.target!r} but {earlier[1]} says {earlier[0]!r}")
    _check_unique(paths)
    for name in ("stdout_digest", "stderr_digest"):
        if result.HasField(name):
            _check_digest(getattr(result, name), function, f"action_result.{name}")

