"""``/live/stdout/NAME`` and ``/live/stderr/NAME``: a running action's output as
server-sent events, read from the same LogStream the worker writes (and Bazel's
ByteStream readers follow). Each event's data is a JSON string of new text; an
``end`` event says the stream finished (or was never there)."""

from __future__ import annotations

import codecs
import json

from aiohttp import web

from cas.errors import ReapiError
from server.console.sources import SOURCES, ConsoleSources


async def live_log(request: web.Request) -> web.StreamResponse:
    sources = request.app[SOURCES]
    which = request.match_info["which"]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    if sources.execution is not None:
        try:
            state = await sources.execution.scheduler.get(request.match_info["name"])
            stream = state.stdout_name if which == "stdout" else state.stderr_name
            if stream:
                await _follow(sources, stream, response, int(request.headers.get("Last-Event-ID", "0") or 0))
        except ReapiError as err:
            await response.write(f"event: problem\ndata: {json.dumps(err.message)}\n\n".encode())
    await response.write(b"event: end\ndata: \"\"\n\n")
    return response


async def _follow(sources: ConsoleSources, stream: str, response: web.StreamResponse, offset: int) -> None:
    """Send what the stream holds from ``offset``, then each new piece until it ends.

    The event id is the byte offset, so a browser that reconnects resumes there."""
    assert sources.execution is not None
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    position = offset
    async for chunk in sources.execution.logstreams.read(stream, offset):
        position += len(chunk)
        text = decoder.decode(chunk)
        if text:
            await response.write(f"id: {position}\ndata: {json.dumps(text)}\n\n".encode())
    tail = decoder.decode(b"", final=True)
    if tail:
        await response.write(f"id: {position}\ndata: {json.dumps(tail)}\n\n".encode())
