"""The page frame and the few helpers every page uses. Everything interpolated
into a page goes through ``esc`` (names, paths and arguments come from clients)."""

from __future__ import annotations

import datetime
import html
from collections.abc import Iterable
from urllib.parse import quote

from aiohttp import web

from cas.digest import Digest

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
header{background:#1d2b3a;color:#fff;padding:.6em 1.2em;display:flex;gap:1.4em;align-items:baseline}
header a{color:#cfe3ff;text-decoration:none}header b{font-size:1.1em;margin-right:1em}
main{padding:1em 1.4em;max-width:1400px}h1{font-size:1.35em;margin:.2em 0 .6em}h2{font-size:1.1em;margin:1.2em 0 .4em}
table{border-collapse:collapse;background:#fff;margin:.3em 0 1em}td,th{border:1px solid #dde1e6;padding:.25em .6em;
text-align:left;vertical-align:top}th{background:#eef1f4}code,pre{font-family:ui-monospace,monospace;font-size:12.5px}
pre{background:#0f1720;color:#dfe7ef;padding:.7em;overflow:auto;max-height:32em;white-space:pre-wrap}
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{background:#fff;border:1px solid #dde1e6;padding:.6em 1em;min-width:9em}
.card .n{font-size:1.8em;font-weight:600}.muted{color:#68727d}.bad{color:#b3261e}.ok{color:#1b7f3b}
form.inline{display:flex;gap:.5em;align-items:center;margin:.5em 0 1em}input[type=text]{width:32em}
.bar{display:inline-block;background:#4a7fd4;height:.8em}
"""

NAV = (("/", "Dashboard"), ("/operations", "Operations"), ("/workers", "Workers"), ("/cas", "CAS"),
       ("/ac", "Action cache"), ("/metrics", "Metrics"))


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def page(title: str, body: str, status: int = 200) -> web.Response:
    nav = "".join(f'<a href="{href}">{name}</a>' for href, name in NAV)
    text = (f"<!doctype html><html><head><meta charset=utf-8><title>{esc(title)} - reapi</title>"
            f"<style>{STYLE}</style></head><body><header><b>reapi</b>{nav}</header>"
            f"<main><h1>{esc(title)}</h1>{body}</main></body></html>")
    return web.Response(text=text, content_type="text/html", status=status)


def not_found(what: str) -> web.Response:
    return page("Not found", f'<p class="bad">{esc(what)}</p>', status=404)


def table(headers: Iterable[str], rows: Iterable[Iterable[str]], empty: str = "none") -> str:
    """Cells are HTML already (escape what comes from outside before)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>" if body else f'<p class="muted">{esc(empty)}</p>'


def q(value: str) -> str:
    """A path segment or query value (instance and operation names hold slashes)."""
    return quote(value, safe="")


def digest_text(digest: Digest) -> str:
    return f"{digest.hash}/{digest.size_bytes}"


def blob_url(kind: str, instance: str, digest: Digest) -> str:
    """``kind``: file (view), blob (download), directory, action, command, tree."""
    return f"/cas/{kind}/{digest.hash}/{digest.size_bytes}?instance={q(instance)}&function={int(digest.function)}"


def when(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def size_text(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} B"
