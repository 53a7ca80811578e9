"""Each Redis script carries only the shared steps' functions it reaches (script_text.py).

What is dropped must be what nothing kept uses: the Redis state's tests run every
script's behaviour; these check the pruning itself, and that every script of both
dispatches, pruned, is Lua that Redis loads and runs without a missing step."""

from __future__ import annotations

import re
from importlib import resources

import redis.asyncio as aioredis

from server.scheduler.locality import FIFO, LOCALITY
from server.scheduler.state.redis import scripts
from server.scheduler.state.redis.script_text import script_text

STEPS = """\
-- a comment naming unused_one, which does not keep it
local P = ARGV[1]
local function key(kind, id) return P .. kind .. ':' .. id end
local function helper(x)
  return key('h', x)
end
local function unused_one(x)
  return helper(x)
end
local locality = {}
function locality.step(x)
  return helper(x) .. 'step'
end
function locality.unused_two()
  return 1
end
local function named_by_a_statement() return 2 end
locality.alias = named_by_a_statement
"""


def test_only_the_definitions_reached_are_kept_in_their_order() -> None:
    text = script_text(STEPS, "return locality.step(ARGV[2])\n")
    assert "local function key(" in text and "local function helper(" in text
    assert "function locality.step(" in text and "named_by_a_statement() return 2 end" in text
    assert "local function unused_one(" not in text and "function locality.unused_two(" not in text
    assert "local P = ARGV[1]" in text and "locality.alias = named_by_a_statement" in text
    assert text.index("local function key(") < text.index("local function helper(") < text.index("locality.step(")
    assert text.endswith("return locality.step(ARGV[2])\n")
    assert script_text(STEPS, "return unused_one(1)\n").count("function") == 4  # not the two locality steps


def test_a_body_using_nothing_keeps_only_what_statements_name() -> None:
    text = script_text(STEPS, "return 1\n")
    assert "named_by_a_statement" in text and "function locality.step(" not in text and "helper" not in text


async def test_every_script_pruned_loads_and_defines_each_step_it_names(redis_url: str) -> None:
    """Redis compiles each script as sent, for both dispatches; and each step of the
    shared ones that a script's text names (outside comments) is defined in it (a
    dropped step would be read as a global, which Redis refuses at run time)."""
    client = aioredis.Redis.from_url(redis_url)
    bodies = [p for p in resources.files(scripts.__package__).joinpath("lua").iterdir()
              if p.name.endswith(".lua") and p.name not in ("prelude.lua", "locality.lua")]
    try:
        for dispatch in (FIFO, LOCALITY):
            steps = scripts._lua("prelude") + ("\n" + scripts._lua("locality") if dispatch.locality else "") + "\n"
            names = set(re.findall(r"^(?:local\s+)?function\s+([\w.]+)", steps, re.M))
            for body in bodies:
                text = scripts.dispatch_header(dispatch) + script_text(steps, body.read_text())
                await client.script_load(text)
                code = re.sub(r"--[^\n]*", "", text)
                defined = set(re.findall(r"^(?:local\s+)?function\s+([\w.]+)", text, re.M))
                for name in names - defined:
                    assert not re.search(r"(?<![\w.])" + re.escape(name) + r"\b", code), (body.name, name)
    finally:
        await client.aclose()
