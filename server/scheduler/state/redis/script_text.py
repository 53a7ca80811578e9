"""A script's text: the prelude's steps it uses, then its own body.

Every script is sent as the shared steps (lua/prelude.lua, and lua/locality.lua with
locality dispatch) followed by its body, so each transition stays one atomic script.
But Redis runs a script's whole text on every call: each ``local function`` of the
steps is a new closure each time, and garbage for Lua's collector after it. With
locality's steps that cost more than a small script's own work (about 25 us a call on
the 2-core machine of docs/BENCHMARKS.md, some ten calls per dispatch). So each script
keeps only the function definitions its body reaches, directly or through the others
it keeps; every other line of the steps (their constants, their tables) stays as it is.

The steps are written so this can be read off their text: a definition starts at the
beginning of a line (``local function NAME`` or ``function locality.NAME``) and ends
at the next line that is ``end`` alone (or on the same line, for a one-line function).
A name counts as reached where it appears as a word outside comments, so a mention
keeps a definition (more text, never less behaviour). Worked out once per process
for each script, when it is first registered.
"""

from __future__ import annotations

import functools
import re

_DEFINITION = re.compile(r"(?:local\s+)?function\s+([A-Za-z_][\w.]*)")
_COMMENT = re.compile(r"--[^\n]*")


def _parts(steps: str) -> list[tuple[str | None, str]]:
    """The steps as (defined name or None, text) parts, in order."""
    lines = steps.splitlines(keepends=True)
    parts: list[tuple[str | None, str]] = []
    i = 0
    while i < len(lines):
        match = _DEFINITION.match(lines[i])
        if match is None:
            parts.append((None, lines[i]))
            i += 1
            continue
        end = i
        if not _COMMENT.sub("", lines[i]).rstrip().endswith("end"):
            end = next(j for j in range(i + 1, len(lines)) if lines[j].rstrip() == "end")
        parts.append((match.group(1), "".join(lines[i:end + 1])))
        i = end + 1
    return parts


_WORD = re.compile(r"(?<![\w.])[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


def _names(code: str) -> set[str]:
    """The names a text uses outside comments: each dotted word and its prefixes
    (``locality.take(`` uses ``locality.take`` and ``locality``)."""
    names: set[str] = set()
    for word in _WORD.findall(_COMMENT.sub("", code)):
        parts = word.split(".")
        names.update(".".join(parts[:n]) for n in range(1, len(parts) + 1))
    return names


@functools.lru_cache(maxsize=4)
def _graph(steps: str) -> tuple[list[tuple[str | None, str]], set[str], dict[str, set[str]]]:
    """The steps' parts, the names their other lines use, and the names each definition uses."""
    parts = _parts(steps)
    always = _names("".join(text for name, text in parts if name is None))
    uses = {name: _names(text) for name, text in parts if name is not None}
    return parts, always, uses


def script_text(steps: str, body: str) -> str:
    """``steps`` then ``body``, without the definitions of ``steps`` that nothing kept uses."""
    parts, always, uses = _graph(steps)
    reached: set[str] = set()
    pending = [*always, *_names(body)]
    while pending:
        name = pending.pop()
        if name not in reached:
            reached.add(name)
            pending.extend(uses.get(name, ()))
    return "".join(text for name, text in parts if name is None or name in reached) + body
