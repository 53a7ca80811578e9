"""``/cas/...``: browse an instance's CAS like bb-browser: Directory trees (walked
one level per page), output Trees, Actions and Commands, text files, and any blob
as a download. Every URL carries ``instance`` and ``function`` (the digest function)
in its query."""

from __future__ import annotations

import posixpath

from aiohttp import web

from cas.digest import Digest
from cas.errors import ReapiError
from cas.store import BlobStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.console.html import blob_url, digest_text, esc, not_found, page, q, size_text, table
from server.console.operation_page import action_section, command_section
from server.console.protos import SHOW_LIMIT, read_proto
from server.console.sources import SOURCES, ConsoleSources


def _target(request: web.Request) -> tuple[str, Digest, BlobStore]:
    sources = request.app[SOURCES]
    instance = request.query.get("instance", "")
    function = int(request.query.get("function", "0") or 0)
    digest = Digest.parse(request.match_info["hash"], int(request.match_info["size"]), function)  # type: ignore[arg-type]
    return instance, digest, sources.instances.get(instance).cas


def _looks_binary(data: bytes) -> bool:
    return b"\0" in data[:8192]


def directory_rows(instance: str, directory: re_pb2.Directory, function: int, path: str) -> list[list[str]]:
    rows = []
    for d in directory.directories:
        digest = Digest.parse(d.digest.hash, d.digest.size_bytes, function)  # type: ignore[arg-type]
        sub = posixpath.join(path, d.name)
        rows.append([f'<a href="{blob_url("directory", instance, digest)}&path={q(sub)}">{esc(d.name)}/</a>',
                     "directory", "", ""])
    for f in directory.files:
        digest = Digest.parse(f.digest.hash, f.digest.size_bytes, function)  # type: ignore[arg-type]
        rows.append([esc(f.name), "file" + (", executable" if f.is_executable else ""),
                     size_text(f.digest.size_bytes),
                     f'<a href="{blob_url("file", instance, digest)}">view</a> '
                     f'<a href="{blob_url("blob", instance, digest)}">download</a>'])
    for s in directory.symlinks:
        rows.append([esc(s.name), f"symlink to {esc(s.target)}", "", ""])
    return rows


def _absent(kind: str, digest: Digest, instance: str) -> web.Response:
    """The 404 of a page whose ``kind`` of blob is not in the instance's CAS."""
    return not_found(f"{kind} {digest_text(digest)} is not in the CAS of instance {instance!r}")


async def directory_page(request: web.Request) -> web.Response:
    instance, digest, cas = _target(request)
    directory = await read_proto(cas, digest, re_pb2.Directory)
    if directory is None:
        return _absent("directory", digest, instance)
    path = request.query.get("path", "")
    rows = directory_rows(instance, directory, int(digest.function), path)
    return page(f"Directory /{path}", f"<p class=muted><code>{esc(digest_text(digest))}</code></p>" +
                table(["name", "kind", "size", ""], rows, "an empty directory"))


async def tree_page(request: web.Request) -> web.Response:
    instance, digest, cas = _target(request)
    tree = await read_proto(cas, digest, re_pb2.Tree)
    if tree is None:
        return _absent("tree", digest, instance)
    function = int(digest.function)
    by_digest = {Digest.of(c.SerializeToString(), function).hash: c for c in tree.children}  # type: ignore[arg-type]
    rows: list[list[str]] = []

    def walk(directory: re_pb2.Directory, path: str) -> None:
        for row in directory_rows(instance, directory, function, path):
            rows.append([f"{esc(path)}/{row[0]}" if path else row[0], *row[1:]])
        for d in directory.directories:
            child = by_digest.get(d.digest.hash)
            if child is not None and len(rows) < 5000:
                walk(child, posixpath.join(path, d.name))

    walk(tree.root, "")
    return page("Output directory (Tree)", f"<p class=muted><code>{esc(digest_text(digest))}</code></p>" +
                table(["path", "kind", "size", ""], rows, "an empty directory"))


async def file_page(request: web.Request) -> web.Response:
    instance, digest, cas = _target(request)
    download = f'<p><a href="{blob_url("blob", instance, digest)}">download</a> ({size_text(digest.size_bytes)})</p>'
    if digest.size_bytes > SHOW_LIMIT:
        return page(f"File {digest_text(digest)}", download + "<p class=muted>too large to show here</p>")
    data = await cas.get_or_none(digest)
    if data is None:
        return _absent("blob", digest, instance)
    shown = "<p class=muted>binary content</p>" if _looks_binary(data) else f"<pre>{esc(data.decode(errors='replace'))}</pre>"
    return page(f"File {digest_text(digest)}", download + shown)


async def blob_download(request: web.Request) -> web.StreamResponse:
    instance, digest, cas = _target(request)
    if not await cas.has(digest):
        return _absent("blob", digest, instance)
    filename = request.query.get("name") or f"{digest.hash}-{digest.size_bytes}"
    response = web.StreamResponse(headers={
        "Content-Type": "application/octet-stream", "Content-Length": str(digest.size_bytes),
        "Content-Disposition": f'attachment; filename="{filename.replace(chr(34), "")}"'})
    await response.prepare(request)
    async for chunk in cas.read(digest):
        await response.write(chunk)
    await response.write_eof()
    return response


async def action_page(request: web.Request) -> web.Response:
    instance, digest, cas = _target(request)
    action = await read_proto(cas, digest, re_pb2.Action)
    if action is None:
        return _absent("action", digest, instance)
    function = int(digest.function)
    body = action_section(instance, action, function)
    command = await read_proto(cas, Digest.parse(action.command_digest.hash, action.command_digest.size_bytes,
                                                 function), re_pb2.Command)  # type: ignore[arg-type]
    body += command_section(command) if command is not None else "<p class=bad>its Command is not in the CAS</p>"
    body += f'<p><a href="/ac?instance={q(instance)}&action={q(digest_text(digest))}">look it up in the action cache</a></p>'
    return page(f"Action {digest_text(digest)}", body)


async def cas_home(request: web.Request) -> web.Response:
    sources = request.app[SOURCES]
    given = request.query.get("digest", "").strip()
    if given:
        hash_, _, size = given.partition("/")
        kind = request.query.get("kind", "directory")
        if kind not in ("directory", "file", "tree", "action", "blob") or not size.isdigit():
            return page("CAS", '<p class="bad">give a digest as HASH/SIZE</p>' + cas_form(""), status=400)
        raise web.HTTPFound(f"/cas/{kind}/{hash_}/{size}?instance={q(request.query.get('instance', ''))}")
    names = ", ".join(esc(i.name) for i in sources.instances.all())
    return page("CAS", cas_form("") + f"<p class=muted>instances served: {names}</p>")


def cas_form(instance: str) -> str:
    kinds = "".join(f"<option>{k}</option>" for k in ("directory", "file", "tree", "action", "blob"))
    return (f'<form class="inline" method="get" action="/cas"><select name="kind">{kinds}</select>'
            f'<input type="text" name="instance" placeholder="instance" value="{esc(instance)}" style="width:10em">'
            f'<input type="text" name="digest" placeholder="HASH/SIZE"><button type="submit">Open</button></form>')


def bad_digest(err: ReapiError) -> web.Response:
    return page("CAS", f'<p class="bad">{esc(err.message)}</p>', status=400)
