"""``/operation/NAME``: one operation: its Action and Command (arguments,
environment, platform), the stage timeline, stdout and stderr (followed live while
it runs), its outputs to download, and why it missed the cache."""

from __future__ import annotations

from aiohttp import web

from cas.digest import Digest
from cas.errors import NotFound
from cas.store import BlobStore
from cas.timestamps import seconds_of
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.console.html import blob_url, digest_text, esc, not_found, page, q, size_text, table, when
from server.console.operations_page import outcome
from server.console.protos import SHOW_LIMIT, read_proto
from server.console.sources import SOURCES, ConsoleSources
from server.console.timeline import timeline
from server.scheduler.operation import OperationState

LIVE_SCRIPT = """<script>
for (const which of ["stdout", "stderr"]) {
  const box = document.getElementById(which);
  if (!box || !box.dataset.live) continue;
  const events = new EventSource(box.dataset.live);
  events.onmessage = (e) => { box.textContent += JSON.parse(e.data); box.scrollTop = box.scrollHeight; };
  events.addEventListener("end", () => { events.close(); box.dataset.ended = "1"; });
}
</script>"""


def _d(proto: re_pb2.Digest, function: int) -> Digest:
    return Digest.parse(proto.hash, proto.size_bytes, function)  # type: ignore[arg-type]


def command_section(command: re_pb2.Command) -> str:
    args = " ".join(esc(a) for a in command.arguments)
    env = table(["name", "value"], ([esc(v.name), f"<code>{esc(v.value)}</code>"] for v in command.environment_variables),
                "no environment variables")
    platform = table(["name", "value"], ([esc(p.name), esc(p.value)] for p in command.platform.properties),
                     "no platform properties")
    outputs = list(command.output_paths) or [*command.output_files, *command.output_directories]
    return (f"<h2>Command</h2><pre>{args}</pre>"
            f'<p class="muted">working directory: {esc(command.working_directory or "(the input root)")}; '
            f"outputs: {esc(', '.join(outputs) or 'none')}</p>"
            f"<h2>Environment</h2>{env}<h2>Platform</h2>{platform}")


def action_section(instance: str, action: re_pb2.Action, function: int) -> str:
    root = _d(action.input_root_digest, function)
    timeout = f"{seconds_of(action.timeout):g} s" if action.HasField("timeout") else "none"
    return (f'<h2>Action</h2><p>input root: <a href="{blob_url("directory", instance, root)}">'
            f"<code>{esc(digest_text(root))}</code></a>; timeout {esc(timeout)}; "
            f'{"not cached (do_not_cache)" if action.do_not_cache else "cacheable"}</p>')


def timeline_section(metadata: re_pb2.ExecutedActionMetadata | None) -> str:
    if metadata is None:
        return ""
    rows = [[esc(stage), esc(when(start)), "running" if took is None else f"{took:.3f} s"]
            for stage, start, took in timeline(metadata)]
    worker = f'<p class="muted">worker: {esc(metadata.worker)}</p>' if metadata.worker else ""
    return "<h2>Timeline</h2>" + worker + table(["stage", "started", "took"], rows, "no stage has started")


async def output_text(cas: BlobStore, raw: bytes, digest: re_pb2.Digest, function: int) -> str:
    if raw:
        return raw.decode(errors="replace")
    if not digest.hash:
        return ""
    d = _d(digest, function)
    if d.size_bytes > SHOW_LIMIT:
        return f"({size_text(d.size_bytes)}: download it)"
    data = await cas.get_or_none(d)
    return "(no longer in the CAS)" if data is None else data.decode(errors="replace")


async def logs_section(state: OperationState, cas: BlobStore, instance: str, function: int) -> str:
    parts = []
    result = state.response.result if state.done and state.response is not None else None
    for which in ("stdout", "stderr"):
        if result is not None:
            text = await output_text(cas, getattr(result, f"{which}_raw"), getattr(result, f"{which}_digest"), function)
            digest = getattr(result, f"{which}_digest")
            link = (f' <a href="{blob_url("blob", instance, _d(digest, function))}">download</a>'
                    if digest.hash else "")
            parts.append(f"<h2>{which}{link}</h2><pre id={which}>{esc(text)}</pre>")
        elif getattr(state, f"{which}_name"):
            parts.append(f'<h2>{which} <span class="muted">(live)</span></h2>'
                         f'<pre id={which} data-live="/live/{which}/{q(state.name)}"></pre>')
    return "".join(parts) + (LIVE_SCRIPT if result is None and parts else "")


def outputs_section(result: re_pb2.ActionResult, instance: str, function: int) -> str:
    files = [[esc(f.path), size_text(f.digest.size_bytes), "yes" if f.is_executable else "",
              f'<a href="{blob_url("file", instance, _d(f.digest, function))}">view</a> '
              f'<a href="{blob_url("blob", instance, _d(f.digest, function))}">download</a>']
             for f in result.output_files]
    dirs = [[esc(d.path), f'<a href="{blob_url("tree", instance, _d(d.tree_digest, function))}">tree</a>']
            for d in result.output_directories]
    links = [[esc(s.path), esc(s.target)] for s in result.output_symlinks]
    out = "<h2>Output files</h2>" + table(["path", "size", "executable", ""], files, "no output files")
    if dirs:
        out += "<h2>Output directories</h2>" + table(["path", ""], dirs)
    if links:
        out += "<h2>Output symlinks</h2>" + table(["path", "target"], links)
    return out


async def operation(request: web.Request) -> web.Response:
    sources = request.app[SOURCES]
    name = request.match_info["name"]
    if sources.execution is None:
        return not_found("remote execution is off on this server")
    try:
        state = await sources.execution.scheduler.get(name)
    except NotFound as err:
        return not_found(err.message)
    instance_name = state.instance_name
    cas = sources.instances.get(instance_name).cas
    function = int(state.action_digest.function)
    body = [table(["", ""], [
        ["operation", esc(state.name)], ["instance", esc(instance_name or '""')],
        ["action", f'<a href="{blob_url("action", instance_name, state.action_digest)}">'
                   f"<code>{esc(digest_text(state.action_digest))}</code></a>"],
        ["stage", esc(state.stage.name.lower())], ["outcome", outcome(state)],
    ])]
    if state.done and state.response is not None and state.response.status.code:
        body.append(f'<p class="bad">{esc(state.response.status.message)}</p>')
    action = await read_proto(cas, state.action_digest, re_pb2.Action)
    command = None
    if action is not None:
        body.append(action_section(instance_name, action, function))
        command = await read_proto(cas, _d(action.command_digest, function), re_pb2.Command)
    if command is not None:
        body.append(command_section(command))
    metadata = state.response.result.execution_metadata if state.done and state.response else state.partial_metadata
    body.append(timeline_section(metadata))
    body.append(await logs_section(state, cas, instance_name, function))
    if state.done and state.response is not None:
        body.append(outputs_section(state.response.result, instance_name, function))
    if not (state.done and state.response is not None and state.response.cached_result):
        body.append(f'<h2>Cache</h2><p><a href="/explain/{q(state.name)}">Why did this miss the cache?</a></p>')
    return page(f"Operation {state.name}", "".join(body))
